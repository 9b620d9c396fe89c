"""The largest batch of the paper's MNIST model whose training step fits in 24 GiB of host memory (issue #15).

The model of ``experiments/configs/mnist_flow.py`` (21 blocks in three stages: 28x28x1, then squeezed
to 14x14x4 and 7x7x16; ``g`` = 3x3 -> 1x1 -> 3x3 convolutions with 128 channels, pre-activation,
c = 0.9; ActNorm before every block; 5-term series, one Gaussian probe; Adamax), with LipSwish on
both sides (normflows' ``LipschitzCNN`` has no ELU), on the CPU, in two gradient settings:

* the Neumann-series gradient: iresflow's ``PowerSeries(gradient='neumann')`` (``remat`` on, its
  default there) against normflows' ``Residual(reduce_memory=True)``;
* backprop through the series (the config's): iresflow's default against ``reduce_memory=False``;
* and iresflow's Neumann step with its blocks under ``nn.scan`` (``unroll_blocks=False``) instead of
  this backend's default (unrolled on CPU): XLA:CPU schedules the unrolled program with more of the
  blocks' buffers alive at once (docs/benchmarks.md has the profile).

How the memory of one training step is measured:

* iresflow: XLA's memory analysis of the compiled step (arguments + outputs + temporaries - donated
  aliases), compiled for the batch size without running it. XLA:CPU keeps freed buffers for reuse,
  so the resident set would not show the step's own peak.
* normflows: the rise of the resident set during one step after a warm-up step, in a fresh
  process per batch (sampled every millisecond, freed buffers returned to the OS; the meter of
  benchmarks/vs_normflows.py).

Both grow about linearly with the batch: the step's memory is measured at two batch sizes and the
line through them gives the largest batch within the budget. For iresflow the compiled step at that
batch is measured again, and while it exceeds the budget the batch shrinks by the overshoot (each
check costs a compile, not a run): the checked batch is one whose step fits. Running a normflows
step at its line's batch would take tens of minutes on 2 cores, so its largest batch is the line's.

    python benchmarks/largest_batch.py --docs-dir docs   # docs/largest_batch.{md,json}, ~15 min on 2 CPUs
    python benchmarks/largest_batch.py --quick  # one tiny stage, Neumann only, 16 MiB budget, prints only
    python benchmarks/largest_batch.py --quick --rows iresflow/neumann  # the test's run
    python benchmarks/largest_batch.py --rows "iresflow/neumann, nn.scan"  # one row; the others kept
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGET_BYTES = 24 * 2**30
GRADIENTS = ("neumann", "backprop")
# Row name -> (side, gradient, iresflow's unroll_blocks: None is the backend's default, unrolled on CPU).
ROWS = {"iresflow/neumann": ("iresflow", "neumann", None), "normflows/neumann": ("normflows", "neumann", None),
        "iresflow/backprop": ("iresflow", "backprop", None), "normflows/backprop": ("normflows", "backprop", None),
        "iresflow/neumann, nn.scan": ("iresflow", "neumann", False)}
MiB = 2**20


def model_settings(quick: bool) -> dict:
  """The paper's MNIST layout (experiments/configs/mnist_flow.py), or a tiny one."""
  if quick:
    return dict(stages=(1,), hidden=4)
  return dict(stages=(7, 7, 7), hidden=128)


# ------------------------------------------------------------------------------------------- iresflow
def iresflow_step_bytes(gradient: str, quick: bool, unroll_blocks: bool | None = None):
  """``bytes(batch)``: the compiled train step's memory at ``batch`` (XLA memory analysis), and the parameter count."""
  import jax

  from iresflow.train import TrainingData, load_config, setup_training
  from iresflow.train.steps import Divergence

  settings = model_settings(quick)
  config = load_config(os.path.join(ROOT, "experiments", "configs", "mnist_flow.py"))
  config.model.stages = settings["stages"]
  config.model.residual.hidden = settings["hidden"]
  config.model.residual.activation = "lipswish"
  config.estimator.gradient = gradient
  config.model.unroll_blocks = unroll_blocks  # None: the backend's default (unrolled on CPU)
  config.batch_size = 8  # of the initialisation only; the step is compiled for each batch size below
  # The trainer's own jitted step (experiments/train.py), on synthetic data (memory does not depend on pixels).
  training = setup_training(config, data=TrainingData.synthetic((28, 28, 1), 256, config.batch_size))
  step, state = training.train_step, training.state

  def step_bytes(batch: int) -> int:
    images = jax.ShapeDtypeStruct((batch, 28, 28, 1), np.uint8)
    analysis = step.lower(state, Divergence.none(), (images,)).compile().memory_analysis()
    found = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes
             - analysis.alias_size_in_bytes)
    print(f"  iresflow {gradient}, batch {batch}: {found / MiB:.1f} MiB", flush=True)
    return found

  return step_bytes, int(sum(leaf.size for leaf in jax.tree.leaves(state.params)))


def iresflow_row(gradient: str, batches: list[int], budget: int, quick: bool, unroll_blocks: bool | None = None
                 ) -> dict:
  """Bytes at ``batches``, the line's largest batch, then compiled checks: while the compiled step at the
  candidate exceeds ``budget``, the candidate shrinks by the overshoot (a few compiles, no run)."""
  step_bytes, n_params = iresflow_step_bytes(gradient, quick, unroll_blocks)
  measured = {batch: step_bytes(batch) for batch in batches}
  row = {"n_params": n_params, "bytes": measured, **largest_batch(measured, budget)}
  candidate, checks = row["largest_batch"], {}
  for _ in range(4):
    checks[candidate] = step_bytes(candidate)
    if checks[candidate] <= budget:
      break
    candidate = int(candidate * budget / checks[candidate])
  row["checked_bytes"] = checks
  row["largest_batch_checked"] = candidate if checks.get(candidate, budget + 1) <= budget else None
  return row


# ------------------------------------------------------------------------------------------ normflows
def normflows_child(gradient: str, batch: int, quick: bool) -> int:
  """The rise of the resident set during one normflows training step at ``batch`` (this process)."""
  import normflows as nf
  import torch

  from common import PeakResident

  torch.set_num_threads(os.cpu_count() or 1)
  torch.manual_seed(0)
  settings = model_settings(quick)
  data_direction, channels, size = [], 1, 28
  for index, n_blocks in enumerate(settings["stages"]):
    if index > 0:
      data_direction.append(nf.flows.Squeeze())  # its inverse squeezes (the data direction)
      channels, size = channels * 4, size // 2
    for _ in range(n_blocks):
      net = nf.nets.LipschitzCNN([channels, settings["hidden"], settings["hidden"], channels], [3, 1, 3],
                                 lipschitz_const=0.9, max_lipschitz_iter=5, init_zeros=False)
      data_direction += [nf.flows.ActNorm((channels, 1, 1)),
                         nf.flows.Residual(net, reduce_memory=gradient == "neumann", n_power_series=5, n_samples=1)]
  base = nf.distributions.DiagGaussian((channels, size, size), trainable=False)
  model = nf.NormalizingFlow(base, data_direction[::-1])
  optimizer = torch.optim.Adamax(model.parameters(), lr=3e-3)
  x = torch.rand(batch, 1, 28, 28)

  def step():
    optimizer.zero_grad(set_to_none=True)
    loss = -model.log_prob(x).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    nf.utils.update_lipschitz(model, 5)

  step()  # ActNorm's data init, the optimizer's state, the power-iteration vectors
  with PeakResident() as meter:
    before = meter.peak
    step()
  return meter.peak - before


def normflows_row(gradient: str, batches: list[int], budget: int, quick: bool, unroll_blocks=None) -> dict:
  env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
  found = {}
  for batch in batches:
    command = [sys.executable, os.path.abspath(__file__), "--normflows-child", gradient, str(batch)]
    out = subprocess.run(command + (["--quick"] if quick else []), capture_output=True, text=True, env=env,
                         timeout=3600)
    if out.returncode:
      raise RuntimeError(f"normflows {gradient} at batch {batch} failed:\n{out.stderr[-3000:]}")
    found[batch] = int(out.stdout.strip().splitlines()[-1])
    print(f"  normflows {gradient}, batch {batch}: {found[batch] / MiB:.1f} MiB", flush=True)
  return {"bytes": found, **largest_batch(found, budget)}


# -------------------------------------------------------------------------------------------- report
def largest_batch(bytes_by_batch: dict[int, int], budget: int) -> dict:
  """The line through the two smallest batches' bytes, and the largest batch it keeps within ``budget``."""
  (b1, m1), (b2, m2) = sorted(bytes_by_batch.items())[:2]
  per_example = (m2 - m1) / (b2 - b1)
  fixed = m1 - per_example * b1
  return {"per_example_bytes": per_example, "fixed_bytes": fixed,
          "largest_batch": int(math.floor((budget - fixed) / per_example))}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--output-dir", "--docs-dir", dest="output_dir", default=None,
                      help="results folder; default workdirs/largest_batch (--quick: print only; --docs-dir docs: "
                           "the committed results)")
  parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS),
                      help="rows to measure; the others are kept from the JSON file in the output folder")
  parser.add_argument("--normflows-child", nargs=2, metavar=("GRADIENT", "BATCH"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.normflows_child:
    print(normflows_child(args.normflows_child[0], int(args.normflows_child[1]), args.quick))
    return
  budget = 16 * MiB if args.quick else BUDGET_BYTES
  batches = [4, 8] if args.quick else [16, 64]
  rows = args.rows
  if any(ROWS[name][0] == "normflows" for name in rows):
    try:
      import normflows  # noqa: F401
      import torch  # noqa: F401
    except ImportError as error:
      print(f"normflows rows skipped: {error} (pip install 'iresflow[bench]')")
      rows = [name for name in rows if ROWS[name][0] == "iresflow"]

  import jax

  output_dir = args.output_dir or (None if args.quick else os.path.join("workdirs", "largest_batch"))
  path = os.path.join(output_dir, "largest_batch.json") if output_dir else None
  results = {"backend": jax.default_backend(), "budget_bytes": budget, "model": model_settings(args.quick),
             "measured_batches": batches, "rows": {}}
  if path and os.path.exists(path):
    with open(path) as f:
      kept = json.load(f)
    if {k: kept.get(k) for k in ("budget_bytes", "model", "measured_batches")} == json.loads(json.dumps(
        {k: results[k] for k in ("budget_bytes", "model", "measured_batches")})):
      results["rows"] = {name: row for name, row in kept["rows"].items() if name in ROWS}
  for name in rows:
    side, gradient, unroll_blocks = ROWS[name]
    measure = iresflow_row if side == "iresflow" else normflows_row
    results["rows"][name] = measure(gradient, batches, budget, args.quick, unroll_blocks)
  results["rows"] = {name: results["rows"][name] for name in ROWS if name in results["rows"]}

  for gradient in GRADIENTS:
    ours, theirs = results["rows"].get(f"iresflow/{gradient}"), results["rows"].get(f"normflows/{gradient}")
    if ours and theirs:
      results[f"ratio_{gradient}"] = (ours["largest_batch_checked"] or ours["largest_batch"]) / theirs["largest_batch"]
  results = json.loads(json.dumps(results))  # batch sizes as keys become strings, as in the file
  text = report(results)
  print(text)
  if output_dir:
    os.makedirs(output_dir, exist_ok=True)
    with open(path, "w") as f:
      json.dump(results, f, indent=2)
    with open(os.path.join(output_dir, "largest_batch.md"), "w") as f:
      f.write(text)


def report(results: dict) -> str:
  """The Markdown table of ``largest_batch.json``'s contents."""
  budget, batches = results["budget_bytes"], results["measured_batches"]
  size = f"{budget / 2**30:g} GiB" if budget >= 2**30 else f"{budget / MiB:g} MiB"
  model = results["model"]
  lines = ["# Largest training batch in host memory: the paper's MNIST model, iresflow vs normflows (issue #15)", "",
           "Command: `python benchmarks/largest_batch.py --docs-dir docs` "
           f"(numbers in largest_batch.json; {results['backend']}). "
           f"Model: stages {tuple(model['stages'])}, {model['hidden']} hidden channels, 5-term series, Adamax; "
           "iresflow's bytes are XLA's memory analysis of the compiled step (its parameters, optimizer state "
           "and batch included), normflows' the rise of the resident set during a step (what was allocated "
           "before it, parameters and optimizer state included, not counted). Method in the script's docstring.",
           "",
           f"| side / gradient | MiB at batch {batches[0]} | MiB at batch {batches[1]} | MiB per example | "
           f"largest batch in {size}, by the line | compiled checks (batch: MiB) | largest batch, checked |",
           "|---|---:|---:|---:|---:|---|---:|"]
  for name, row in results["rows"].items():
    measured = [row["bytes"][str(b)] / MiB for b in batches]
    checks = ", ".join(f"{int(b):,}: {v / MiB:,.0f}" for b, v in row.get("checked_bytes", {}).items()) or "n/a"
    checked = row.get("largest_batch_checked")
    lines.append(f"| {name} | {measured[0]:.1f} | {measured[1]:.1f} | {row['per_example_bytes'] / MiB:.2f} | "
                 f"{row['largest_batch']:,} | {checks} | {'n/a (not run)' if checked is None else f'{checked:,}'} |")
  lines.append("")
  for gradient in GRADIENTS:
    if f"ratio_{gradient}" in results:
      lines.append(f"- {gradient}: iresflow's largest batch (checked) / normflows' (by the line) = "
                   f"{results[f'ratio_{gradient}']:.2f}")
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  main()
