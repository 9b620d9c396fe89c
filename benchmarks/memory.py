"""Peak memory of a training step vs the number of series terms: Neumann gradient vs backprop.

XLA's memory analysis of the compiled, jitted maximum-likelihood train step of an ``IResNetFlow``
(temporary buffers: what the step needs beyond its inputs and outputs). With backprop through the
series every term's residuals are kept for the backward pass; with the Neumann-series gradient
(Residual Flows) the series runs without gradient and memory stays flat. Writes ``docs/memory.md``.

    python benchmarks/memory.py            # 28x28x1 input, 8 blocks, 64 hidden channels, batch 64
    python benchmarks/memory.py --quick    # tiny (seconds; used by a test)
"""

from __future__ import annotations

import argparse
import os
import platform

import jax
import jax.numpy as jnp
import optax

from iresflow.models import IResNetFlow
from iresflow.nn import ExactLogDet, PowerSeries, ResidualSpec
from iresflow.train import TrainState
from iresflow.train.steps import make_train_step
from iresflow.train.tasks import DensityPreprocessing, DensityTask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def temp_bytes(n_terms: int, gradient: str, image: int, blocks: int, hidden: int, batch: int) -> int:
  model = IResNetFlow(data_shape=(image, image, 1), stages=(blocks,), residual=ResidualSpec(hidden=hidden))
  x = jnp.zeros((batch, image, image, 1), jnp.uint8)
  task = DensityTask(model, DensityPreprocessing(256), PowerSeries(n_terms=n_terms, gradient=gradient), ExactLogDet())
  variables = jax.jit(task.init_variables)(jax.random.key(0), (x,))
  optimizer = optax.adam(1e-3)
  step = make_train_step(task, optimizer, 0.999, jax.random.key(2))
  compiled = jax.jit(step).lower(TrainState.create(variables, optimizer), (x,)).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  args = parser.parse_args()
  image, blocks, hidden, batch = (8, 2, 4, 8) if args.quick else (28, 8, 64, 64)
  rows = []
  for gradient in ("backprop", "neumann"):
    sizes = {n: temp_bytes(n, gradient, image, blocks, hidden, batch) for n in (2, 20)}
    rows.append(f"| {gradient} | {sizes[2] / 2**20:.1f} | {sizes[20] / 2**20:.1f} | {sizes[20] / sizes[2]:.2f} |")
  text = "\n".join([
      "# Training-step memory vs series terms",
      "",
      f"Command: `python benchmarks/memory.py{' --quick' if args.quick else ''}`. Machine: {platform.machine()}, "
      f"{os.cpu_count()} CPUs, JAX {jax.__version__} on {jax.default_backend()}. Temporary buffers of the "
      f"compiled train step (XLA memory analysis) of an `IResNetFlow` on {image}x{image}x1 inputs, {blocks} "
      f"blocks, {hidden} hidden channels, batch {batch}.",
      "",
      "| gradient | 2 terms (MiB) | 20 terms (MiB) | ratio |",
      "|---|---:|---:|---:|",
      *rows,
      "",
  ])
  print(text)
  if not args.quick:
    with open(os.path.join(ROOT, "docs", "memory.md"), "w") as f:
      f.write(text)


if __name__ == "__main__":
  main()
