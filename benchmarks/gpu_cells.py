"""The cells of the GPU benchmark, one section per call, each written to ``OUT/<section>.json``.

A lent GPU machine has minutes, not hours, so ``gpu_run.sh`` runs each section under its own time
limit and a slow one cannot take the others with it; each cell is written as soon as it is measured.
Sections:

* ``sampling``: sampling time of both workloads, iresflow's inverse at ``precision='highest'`` (the
  default) and at JAX's default (TensorFloat-32 matmuls on recent GPUs), with iterations and
  convergence; normflows beside it.
* ``train_image``: training-step time of the image workload, both gradients, all sides.
* ``memory``: peak memory of the image training step with 2 and 20 series terms (fresh process per
  cell; both sides read their allocator's peak).
* ``compile``: compile time of the jitted train step of an 8- and a 64-block flow.
* ``fullsize``: step time of the paper-size MNIST and CIFAR-10 models (``full_size_step.py``).
* ``precision``: the same steps under each training precision policy (``full_size_step.POLICIES``:
  float32 at 'highest', JAX's default (TF32), bfloat16 ``g`` and series), issue #15 item 3.
* ``matmul``: the peaks the utilisation figures divide by: an n x n matmul in float32 at 'highest',
  at JAX's default (TF32) and in bfloat16.

    python benchmarks/gpu_cells.py sampling OUT            # full size
    python benchmarks/gpu_cells.py sampling OUT --quick    # tiny sizes, to check the script on a CPU
"""

from __future__ import annotations

import json
import os
import statistics
import sys

import vs_normflows as bench  # a sibling script: run as a script, this folder is on sys.path

SAMPLING_REPEATS = 10
QUICK = "--quick" in sys.argv


def sampling():
  for workload in bench.workloads(quick=QUICK):
    variants = ["iresflow"] + (["iresflow-unrolled"] if workload.image else [])
    precisions = {f"{side}/{precision or 'default'}": (side, precision)
                  for side in variants for precision in ("highest", None)}
    entry = bench.sample_cell(workload, 2, SAMPLING_REPEATS, {**precisions, "normflows": ("normflows", None)})
    for key, cell in entry.items():
      cell["median_ms"] = 1e3 * statistics.median(cell["times"])
      print(workload.name, key, cell["median_ms"], cell["mean_iterations"], cell["converged"], flush=True)
    yield workload.name, entry


def train_image():
  image = bench.workloads(quick=QUICK)[1]
  for gradient in ("backprop", "neumann"):
    for side_name, entry in bench.train_cell(image, gradient, 3, 10).items():
      entry["median_ms"] = 1e3 * statistics.median(entry["times"])
      print(gradient, side_name, entry["median_ms"], flush=True)
      yield f"{gradient}/{side_name}", entry


def memory():
  image = bench.workloads(quick=QUICK)[1]
  # iresflow in its default configuration for the backend (remat with the Neumann gradient), and without remat.
  cells = [("iresflow-default", "neumann", True), ("iresflow-default", "neumann", False),
           ("normflows", "neumann", None), ("iresflow-default", "backprop", False), ("normflows", "backprop", None)]
  for side_name, gradient, remat in cells:
    for n_terms in (2, 20):
      peak = bench.peak_memory(side_name, image, gradient, n_terms, QUICK, remat)
      name = side_name.split("-")[0] + ("" if remat is None else f"-remat={remat}")
      print(name, gradient, n_terms, peak, flush=True)
      yield f"{name}/{gradient}/{n_terms}", peak


def compile_cells():
  from common import compile_seconds
  depths, hidden, image = bench.compile_sizes(QUICK)
  for n_blocks in depths:
    seconds = compile_seconds(n_blocks, hidden, image)
    print(n_blocks, seconds, flush=True)
    yield str(n_blocks), seconds


def fullsize():
  import full_size_step
  cells = [("digits_flow", False)] if QUICK else [("mnist_flow", False), ("mnist_flow", True), ("cifar10_flow", False)]
  for name, unroll in cells:
    entry = full_size_step.time_step(name, unroll, repeats=2 if QUICK else 10)
    print(name, unroll, entry["compile_s"], entry["median_s"], flush=True)
    yield f"{name}/{'unrolled' if unroll else 'scan'}", entry


def precision_policies():
  import full_size_step
  # CIFAR-10 first, and the config's own policy first: the earlier GPU runs measured that step (the
  # baseline of issue #15's 2x target), and a part cut by its time limit keeps what came first.
  configs = ["digits_flow"] if QUICK else ["cifar10_flow", "mnist_flow"]
  for name in configs:
    for policy in ("default", "bfloat16", "float32"):
      entry = full_size_step.time_step(name, False, repeats=2 if QUICK else 10, policy=policy,
                                       blocks_per_stage=1 if QUICK else None)
      print(name, policy, entry["compile_s"], entry["median_s"], flush=True)
      yield f"{name}/{policy}", entry


def matmul():
  """The references for utilisation: FLOP/s of an n x n matmul at each precision the steps use."""
  settings = {"float32_highest": ("highest", "float32"), "float32_default": (None, "float32"),
              "bfloat16": (None, "bfloat16")}
  for size in ((512,) if QUICK else (4096, 8192)):
    for name, (precision, dtype) in settings.items():
      flops = bench.matmul_flops_per_second(size, precision=precision, dtype=dtype)
      print(size, name, flops / 1e12, "TFLOP/s", flush=True)
      yield f"{size}/{name}", flops


SECTIONS = {"sampling": sampling, "train_image": train_image, "memory": memory, "compile": compile_cells,
            "fullsize": fullsize, "precision": precision_policies, "matmul": matmul}


def main() -> None:
  section, out = sys.argv[1], sys.argv[2]
  if section not in SECTIONS:
    raise SystemExit(f"section: expected one of {sorted(SECTIONS)}, got {section!r}")
  os.makedirs(out, exist_ok=True)
  import jax

  from iresflow.train.workdir import json_ready
  result = {"device": jax.devices()[0].device_kind, "jax": jax.__version__, section: {}}
  for key, value in SECTIONS[section]():  # written after every cell: a time limit keeps what finished
    result[section][key] = value
    with open(os.path.join(out, f"{section}.json"), "w") as f:
      json.dump(json_ready(result), f, indent=1, allow_nan=False)


if __name__ == "__main__":
  main()
