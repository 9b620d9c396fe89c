"""Training-step time of the paper-size models (MNIST, CIFAR-10 configs) on synthetic data.

Builds the model, optimizer and jitted train step with ``iresflow.train.setup_training``, the function
``experiments/train.py`` runs (same model, task, EMA, gradient clipping, finiteness guard), on random
uint8 images of the dataset's shape (``TrainingData.synthetic``: the time does not depend on the
pixel values), and reports the compile time and the median step time, with blocks under ``nn.scan``,
unrolled, or as the default chooses for this backend (``unroll=None``: unrolled on CPU, scanned
elsewhere). Meant for an accelerator; on a CPU the full-size steps take minutes.

    python benchmarks/full_size_step.py                          # mnist_flow and cifar10_flow
    python benchmarks/full_size_step.py --configs mnist_flow --unroll both --output out.json
    python benchmarks/full_size_step.py --quick                  # tiny digits_flow, seconds (a test runs it)
    python benchmarks/full_size_step.py --configs mnist_flow --unroll default --compile-only
                                                                 # compile time of the default on this backend
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

from iresflow.core import loops
from iresflow.train import TrainingData, setup_training
from iresflow.train import load_config as load_config_file
from iresflow.train.steps import Divergence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_SHAPES = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3), "digits": (8, 8, 1)}
NUM_LEVELS = {"mnist": 256, "cifar10": 256, "digits": 17}


def load_config(name: str):
  return load_config_file(os.path.join(ROOT, "experiments", "configs", f"{name}.py"))


# Training precision policies (issue #15): the estimator's matmul precision and compute dtype for g and
# the series; the norm estimates run at 'highest' in float32 under each.
POLICIES = {"float32": dict(precision="highest"), "default": dict(), "bfloat16": dict(compute_dtype="bfloat16")}


def build_step(config_name: str, unroll: bool | None, blocks_per_stage: int | None = None, policy: str = "default",
               gradient: str | None = None):
  """``(train step, state, two batches, config)`` for ``config_name`` on synthetic data.

  The step is ``step(state, divergence, batch) -> (state, divergence, metrics)`` (see
  ``iresflow.train.steps``). ``unroll`` unrolls the blocks and the series terms (None: the
  backend's default); ``blocks_per_stage`` overrides the depth; ``policy`` is a key of ``POLICIES``
  (``'default'``: the config's, JAX's default matmul precision in float32); ``gradient`` the
  estimator's (None: the config's, backprop through the series).
  """
  config = load_config(config_name)
  config.model.unroll_blocks = unroll
  config.estimator.unroll = unroll
  config.estimator.update(POLICIES[policy])
  if gradient is not None:
    config.estimator.gradient = gradient
  if blocks_per_stage is not None:
    config.model.stages = (blocks_per_stage,) * len(config.model.stages)
  data = TrainingData.synthetic(DATA_SHAPES[config.dataset], NUM_LEVELS[config.dataset], 2 * config.batch_size)
  training = setup_training(config, data=data)
  train_step = training.train_step.__wrapped__  # unjitted: the caller jits it (for another device, too)
  step = lambda state, batch: train_step(state, Divergence.none(), batch)
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


def variant_name(unroll: bool | None) -> str:
  return {False: "nn.scan", True: "unrolled", None: "default"}[unroll]


def time_step(config_name: str, unroll: bool | None, repeats: int, warmup: int = 2,
              blocks_per_stage: int | None = None, policy: str = "default") -> dict:
  """Compile time and step times of ``config_name``'s density train step (``repeats=0``: compile only)."""
  train_step, state, batches, config = build_step(config_name, unroll, blocks_per_stage, policy)
  start = time.perf_counter()
  lowered = jax.jit(train_step, donate_argnums=0).lower(state, batches[0])
  trace_s = time.perf_counter() - start
  start = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  n_params = sum(p.size for p in jax.tree.leaves(state.params))
  entry = {"config": config_name, "unroll_blocks": unroll, "unrolled": loops.resolve_unroll(unroll),
           "variant": variant_name(unroll), "policy": policy, "blocks": list(config.model.stages),
           "hidden": config.model.residual.hidden, "batch": config.batch_size, "params": int(n_params),
           "trace_s": trace_s, "compile_s": compile_s,
           "device": jax.devices()[0].device_kind, "backend": jax.default_backend()}
  if repeats == 0:
    return entry
  times = []
  for i in range(warmup + repeats):
    start = time.perf_counter()
    state, _, metrics = compiled(state, batches[i % 2])
    loss = float(metrics["loss"])  # waits for the step
    if i >= warmup:
      times.append(time.perf_counter() - start)
  return {**entry, "times": times, "median_s": statistics.median(times),
          "images_per_s": config.batch_size / statistics.median(times), "loss": loss}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", nargs="+", default=["mnist_flow", "cifar10_flow"])
  parser.add_argument("--unroll", choices=["scan", "unrolled", "both", "default"], default="both",
                      help="both: nn.scan and unrolled; default: unroll=None, the backend's choice")
  parser.add_argument("--compile-only", action="store_true", help="trace and compile, time no step")
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
  variants = {"scan": [False], "unrolled": [True], "both": [False, True], "default": [None]}[args.unroll]
  repeats = 0 if args.compile_only else args.repeats
  results = []
  for name in args.configs:
    for unroll in variants:
      entry = (time_step(name, unroll, min(repeats, 1), warmup=1, blocks_per_stage=1) if args.quick
               else time_step(name, unroll, repeats))
      results.append(entry)
      step = "" if repeats == 0 else (f", step {1e3 * entry['median_s']:.1f} ms "
                                      f"({entry['images_per_s']:.0f} images/s)")
      variant = entry["variant"] + (f" ({'unrolled' if entry['unrolled'] else 'nn.scan'})" if unroll is None else "")
      print(f"{name} {variant}: "
            f"{entry['params']:,} parameters, trace {entry['trace_s']:.1f} s, compile {entry['compile_s']:.1f} s"
            f"{step} on {entry['device']}", flush=True)
      if args.output:
        with open(args.output, "w") as f:
          json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
