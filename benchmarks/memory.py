"""Peak memory of a training step vs the number of series terms: Neumann gradient vs backprop, with and without remat.

XLA's memory analysis of the compiled, jitted maximum-likelihood train step of an ``IResNetFlow``
(temporary buffers: what the step needs beyond its inputs and outputs), in the default
configuration of this backend (``unroll=None``). With backprop through the series every term's
residuals are kept for the backward pass; with the Neumann-series gradient (Residual Flows) the
series runs without gradient and memory stays flat. ``remat`` (``PowerSeries(remat=...)``; the
default with the Neumann gradient) keeps only each block's input and Neumann vector and recomputes
``g`` in the backward pass. Writes ``memory.md`` and ``memory.json`` into
``--output-dir`` (default ``workdirs/memory``; ``--docs-dir docs`` for the committed results).

    python benchmarks/memory.py            # 28x28x1 input, 8 blocks, 64 hidden channels, batch 64
    python benchmarks/memory.py --quick    # tiny (seconds; used by a test)
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import jax.numpy as jnp
import optax

from common import machine_description  # this folder's shared helpers
from iresflow.core import loops
from iresflow.models import IResNetFlow
from iresflow.nn import ExactLogDet, PowerSeries, ResidualSpec
from iresflow.train import TrainState
from iresflow.train.steps import make_train_step
from iresflow.train.tasks import DensityPreprocessing, DensityTask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def temp_bytes(n_terms: int, gradient: str, remat: bool, image: int, blocks: int, hidden: int, batch: int) -> int:
  model = IResNetFlow(data_shape=(image, image, 1), stages=(blocks,), residual=ResidualSpec(hidden=hidden))
  x = jnp.zeros((batch, image, image, 1), jnp.uint8)
  estimator = PowerSeries(n_terms=n_terms, gradient=gradient, remat=remat)
  task = DensityTask(model, DensityPreprocessing(256), estimator, ExactLogDet())
  variables = jax.jit(task.init_variables)(jax.random.key(0), (x,))
  optimizer = optax.adam(1e-3)
  step = make_train_step(task, optimizer, 0.999, jax.random.key(2))
  compiled = jax.jit(step).lower(TrainState.create(variables, optimizer), (x,)).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="one tiny cell, printed only")
  parser.add_argument("--output-dir", "--docs-dir", dest="output_dir", default=os.path.join("workdirs", "memory"),
                      help="results folder (--docs-dir docs: the committed results)")
  args = parser.parse_args()
  image, blocks, hidden, batch = (8, 2, 4, 8) if args.quick else (28, 8, 64, 64)
  many = 4 if args.quick else 20
  cells = [("backprop", False), ("backprop", True), ("neumann", False), ("neumann", True)]
  if args.quick:
    cells = [("neumann", True)]  # the default training step; tests/core/test_remat.py checks the numbers
  results = {"backend": jax.default_backend(), "unrolled": loops.unroll_by_default(), "image": image,
             "blocks": blocks, "hidden": hidden, "batch": batch, "terms": [2, many], "rows": []}
  rows = []
  for gradient, remat in cells:
    sizes = {n: temp_bytes(n, gradient, remat, image, blocks, hidden, batch) for n in (2, many)}
    default = " (default)" if remat == (gradient == "neumann") else ""
    results["rows"].append({"gradient": gradient, "remat": remat, "temp_bytes": [sizes[2], sizes[many]]})
    rows.append(f"| {gradient} | {'yes' if remat else 'no'}{default} | {sizes[2] / 2**20:.1f} | "
                f"{sizes[many] / 2**20:.1f} | {sizes[many] / sizes[2]:.2f} |")
    print(rows[-1], flush=True)
  text = "\n".join([
      "# Training-step memory vs series terms",
      "",
      f"Command: `python benchmarks/memory.py{' --quick' if args.quick else ' --docs-dir docs'}`. "
      f"Machine: {machine_description()}. Temporary buffers of the "
      f"compiled train step (XLA memory analysis) of an `IResNetFlow` on {image}x{image}x1 inputs, {blocks} "
      f"blocks, {hidden} hidden channels, batch {batch}; blocks and series terms "
      f"{'unrolled' if results['unrolled'] else 'under nn.scan / fori_loop'} (this backend's default).",
      "",
      f"| gradient | remat | 2 terms (MiB) | {many} terms (MiB) | ratio |",
      "|---|---|---:|---:|---:|",
      *rows,
      "",
  ])
  print(text)
  if not args.quick:
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "memory.md"), "w") as f:
      f.write(text)
    with open(os.path.join(args.output_dir, "memory.json"), "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
