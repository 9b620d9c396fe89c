"""What the ordering ties on the series' start vectors change: step memory of unrolled blocks, and speed.

``iresflow.core.logdet`` adds zero computed from each block's input to the probes and to the saved
Neumann vector (``_vectors_after_input``), so that XLA:CPU cannot run a block's first
vector-Jacobian product long before the block and keep the result (docs/benchmarks.md has the
profile). This script compiles the same programs with that tie and with it replaced by the identity:

* memory: XLA's memory analysis (temporary buffers) of the loss and of its gradient for one stage of
  2 and 4 unrolled blocks on 28x28x1 inputs (128 channels, 3x3 -> 1x1 -> 3x3, pre-activation
  LipSwish, 5-term series with the Neumann gradient, batch 16);
* speed: the Neumann training steps of ``vs_normflows.py``'s toy and image workloads in this
  backend's default configuration, tied and untied timed in turns.

LipSwish's other change of the same commit (``1/1.1`` on ``beta`` rather than on the array) is in
both columns.

    python benchmarks/ordering_ties.py           # docs/ordering_ties.json (~3 min on 2 cores)
    python benchmarks/ordering_ties.py --quick   # tiny sizes, seconds; prints only
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import vs_normflows as bench  # noqa: E402  (a sibling script)

MiB = 2**20


def untied():
  """A context in which the series start from the untied probes and Neumann vector."""
  import iresflow.core.logdet
  return mock.patch.object(iresflow.core.logdet, "_vectors_after_input", lambda vectors, x: vectors)


def memory(quick: bool) -> dict:
  from iresflow.core import PowerSeries
  from iresflow.models import IResNetFlow
  from iresflow.nn import LipschitzConstraint, ResidualSpec

  size, hidden, batch = (8, 8, 4) if quick else (28, 128, 16)
  residual = ResidualSpec(hidden=hidden, kernel_sizes=(3, 1, 3), activation="lipswish", preactivation=True,
                          constraint=LipschitzConstraint(coeff=0.9, n_power_iterations=1))
  estimator = PowerSeries(n_terms=5, gradient="neumann", unroll=True)
  x = jnp.zeros((batch, size, size, 1))
  result = {"hidden_activation_mib": batch * size * size * hidden * 4 / MiB}
  for blocks in (2, 4):
    model = IResNetFlow(data_shape=(size, size, 1), stages=(blocks,), initial_squeeze=False, actnorm=False,
                        unroll_blocks=True, residual=residual, prior="normal")
    variables = jax.jit(lambda key, x: model.init(key, x, estimator=PowerSeries(n_terms=1)))(jax.random.key(0), x)

    def loss(params):
      log_prob, _ = model.apply({**variables, "params": params}, x, estimator=estimator,
                                rngs={"logdet": jax.random.key(1)}, mutable=["spectral"])
      return -jnp.mean(log_prob)

    for name, context in (("tied", contextlib.nullcontext), ("untied", untied)):
      with context():
        for kind, fn in (("loss", loss), ("gradient", jax.grad(loss))):
          # A new function object each time: jit would otherwise reuse the other column's trace.
          compiled = jax.jit(lambda params, fn=fn: fn(params)).lower(variables["params"]).compile()
          result[f"{blocks} blocks/{kind}/{name}"] = compiled.memory_analysis().temp_size_in_bytes / MiB
  print("memory (MiB)", json.dumps(result, indent=1), flush=True)
  return result


def speed(quick: bool) -> dict:
  result = {}
  for workload in bench.workloads(quick):
    sides = {}
    for name, context in (("tied", contextlib.nullcontext), ("untied", untied)):
      with context():
        side = bench.IresflowSide(workload, "neumann", unroll=None)
        side.step(0)  # traced and compiled here
      sides[name] = side
    times = bench.interleaved_times({name: side.step for name, side in sides.items()}, 2, 3 if quick else 20)
    result[workload.name] = {name: 1e3 * float(np.median(t)) for name, t in times.items()}
    print("step ms", workload.name, result[workload.name], flush=True)
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds; a smoke test)")
  parser.add_argument("--output", help="the JSON file (default docs/ordering_ties.json; --quick writes none)")
  args = parser.parse_args()
  start = time.perf_counter()
  results = {"command": "python benchmarks/ordering_ties.py" + (" --quick" if args.quick else ""),
             "machine": f"{os.cpu_count()} CPU cores, JAX {jax.__version__} ({jax.default_backend()})",
             "memory_mib": memory(args.quick), "neumann_step_ms": speed(args.quick)}
  results["wall_s"] = time.perf_counter() - start
  bench.save_results(results, args.output, args.quick, "ordering_ties")


if __name__ == "__main__":
  main()
