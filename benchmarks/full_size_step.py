"""Training-step time of the paper-size models (MNIST, CIFAR-10 configs) on synthetic data.

Builds the model, optimizer and jitted train step with ``iresflow.train.setup_training``, the function
``experiments/train.py`` runs (same model, task, EMA, gradient clipping, finiteness guard), on random
uint8 images of the dataset's shape (``TrainingData.synthetic``: the time does not depend on the
pixel values), and reports the compile time and the median step time, with blocks under ``nn.scan``
and unrolled. Meant for an accelerator; on a CPU the full-size steps take minutes.

    python benchmarks/full_size_step.py                          # mnist_flow and cifar10_flow
    python benchmarks/full_size_step.py --configs mnist_flow --unroll both --output out.json
    python benchmarks/full_size_step.py --quick                  # tiny digits_flow, seconds (a test runs it)
    JAX_PLATFORMS=cpu python benchmarks/full_size_step.py --flops --output docs/gpu/flops.json
                                                                 # FLOPs per step (XLA cost analysis)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax

from iresflow.train import TrainingData, setup_training
from iresflow.train import load_config as load_config_file
from iresflow.train.steps import Divergence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_SHAPES = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3), "digits": (8, 8, 1)}
NUM_LEVELS = {"mnist": 256, "cifar10": 256, "digits": 17}


def load_config(name: str):
  return load_config_file(os.path.join(ROOT, "experiments", "configs", f"{name}.py"))


def build_step(config_name: str, unroll: bool, blocks_per_stage: int | None = None):
  """``(jitted train step, state, two batches, config)`` for ``config_name`` on synthetic data.

  The step is ``step(state, divergence, batch) -> (state, divergence, metrics)`` (see
  ``iresflow.train.steps``). ``unroll`` unrolls the blocks and the series terms;
  ``blocks_per_stage`` overrides the depth.
  """
  config = load_config(config_name)
  config.model.unroll_blocks = unroll
  config.estimator.unroll = unroll
  if blocks_per_stage is not None:
    config.model.stages = (blocks_per_stage,) * len(config.model.stages)
  data = TrainingData.synthetic(DATA_SHAPES[config.dataset], NUM_LEVELS[config.dataset], 2 * config.batch_size)
  training = setup_training(config, data=data)
  step = lambda state, batch: training.train_step(state, Divergence.none(), batch)
  return step, training.state, [training.device_batch(i) for i in range(2)], config


def step_flops(config_name: str) -> float:
  """FLOPs of one train step from XLA's cost analysis of the compiled step on this backend.

  XLA's analysis counts a loop body once, whatever its trip count, so this compiles the model with
  one block per stage, unrolled (series terms too), and scales by the depth of the (equal) stages.
  Use a CPU: on a GPU the analysis does not count cuDNN convolutions (custom calls).
  """
  depths = set(load_config(config_name).model.stages)
  if len(depths) != 1:
    raise ValueError(f"config: expected stages of equal depth for the scaling, got {sorted(depths)}")
  train_step, state, batches, _ = build_step(config_name, True, blocks_per_stage=1)
  analysis = jax.jit(train_step).lower(state, batches[0]).compile().cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return float(analysis["flops"]) * depths.pop()


def time_step(config_name: str, unroll: bool, repeats: int, warmup: int = 2,
              blocks_per_stage: int | None = None) -> dict:
  """Compile time and step times of ``config_name``'s density train step."""
  train_step, state, batches, config = build_step(config_name, unroll, blocks_per_stage)
  lowered = jax.jit(train_step, donate_argnums=0).lower(state, batches[0])
  start = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  times = []
  for i in range(warmup + repeats):
    start = time.perf_counter()
    state, _, metrics = compiled(state, batches[i % 2])
    loss = float(metrics["loss"])  # waits for the step
    if i >= warmup:
      times.append(time.perf_counter() - start)
  n_params = sum(p.size for p in jax.tree.leaves(state.params))
  return {"config": config_name, "unroll_blocks": unroll, "blocks": list(config.model.stages),
          "hidden": config.model.residual.hidden, "batch": config.batch_size, "params": int(n_params),
          "compile_s": compile_s, "times": times, "median_s": statistics.median(times),
          "images_per_s": config.batch_size / statistics.median(times), "loss": loss,
          "device": jax.devices()[0].device_kind, "backend": jax.default_backend()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", nargs="+", default=["mnist_flow", "cifar10_flow"])
  parser.add_argument("--unroll", choices=["scan", "unrolled", "both"], default="both")
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--quick", action="store_true",
                      help="digits_flow with one block per stage, 1 timed step, nn.scan only")
  parser.add_argument("--flops", action="store_true",
                      help="print each config's FLOPs per step (XLA cost analysis; run on a CPU) instead of timing")
  parser.add_argument("--output", default=None, help="JSON file for the results (default: print only)")
  args = parser.parse_args()
  if args.quick:
    args.configs, args.unroll, args.repeats = ["digits_flow"], "scan", 2
  if args.flops:
    flops = {}
    for name in args.configs:
      flops[name] = step_flops(name)
      print(f"{name}: {flops[name] / 1e12:.3f} TFLOP per train step", flush=True)
      if args.output:
        with open(args.output, "w") as f:
          json.dump({"backend": jax.default_backend(), "flops_per_step": flops}, f, indent=1)
    return
  variants = {"scan": [False], "unrolled": [True], "both": [False, True]}[args.unroll]
  results = []
  for name in args.configs:
    for unroll in variants:
      entry = (time_step(name, unroll, 1, warmup=1, blocks_per_stage=1) if args.quick
               else time_step(name, unroll, args.repeats))
      results.append(entry)
      print(f"{name} {'unrolled' if unroll else 'nn.scan'}: {entry['params']:,} parameters, compile "
            f"{entry['compile_s']:.1f} s, step {1e3 * entry['median_s']:.1f} ms "
            f"({entry['images_per_s']:.0f} images/s) on {entry['device']}", flush=True)
      if args.output:
        with open(args.output, "w") as f:
          json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
