"""iresflow vs normflows (PyTorch; its residual flow is Residual Flows' own code), side by side in one run.

Three workloads with the same architecture, data shape, batch, estimator and optimizer on both sides
(issues #7 and #28):

* ``toy``: 2-D flow, 16 residual blocks, ``g`` = MLP 2 -> 128 -> 128 -> 2 (LipSwish before each
  layer), c = 0.9, batch 500.
* ``fc30``: a 30-d tabular flow, 8 residual blocks, ``g`` = MLP 30 -> 128 -> 128 -> 30 (as ``toy``), batch 128.
* ``image``: 8 residual blocks on 4x14x14 inputs (a squeezed 1x28x28 image), ``g`` = conv 3x3 -> 1x1
  -> 3x3 with 64 hidden channels (LipSwish before each layer), c = 0.9, batch 64.

Both use the truncated series with 5 terms and 1 Gaussian probe, a learned diagonal Gaussian prior,
Adam, and 5 power iterations per layer per step for spectral normalisation (normflows does these in
``nf.utils.update_lipschitz`` after the optimizer step, as its examples do; iresflow inside the jitted
step). No ActNorm on either side. Measured:

* training step (forward, log-det, gradient, Adam, spectral update): median and quartiles of timed
  steps after warm-up, the sides timed in turns (one step of each per round), with backprop through
  the series and with the Neumann-series gradient (normflows' ``reduce_memory=True``, which also does
  the backward pass inside the forward); iresflow's jit compile time separately. iresflow runs with
  both loops rolled, both unrolled, and, where it is neither, its default (``iresflow.core.loops``);
* sampling (timed in turns too): prior draw + fixed-point inverse of every block to
  ``max|x + g(x) - y| <= 1e-5`` on both sides (normflows' own stopping rule compares the *squared*
  change with its tolerance, so it is given ``atol = 1e-10``, which is the same rule), no log-det;
* peak memory of one training step with 2 and 20 series terms, each in a fresh process: on CPU the
  rise of the resident set during the step (sampled every millisecond; ``MALLOC_MMAP_THRESHOLD_``
  fixed so freed buffers return to the OS), on a GPU the allocators' peak counters;
* utilisation: FLOPs of iresflow's compiled image step (XLA cost analysis) per second, against a
  large float32 matmul timed in the same run; and compile time of a 64- vs an 8-block flow.

    make bench                                        # installs the `bench` extra, runs this
    python benchmarks/vs_normflows.py --docs-dir docs     # full sizes (~25 min on 2 CPU cores), docs/vs_normflows.*
    python benchmarks/vs_normflows.py --quick         # tiny sizes, about a minute (a test runs it)

Nothing here asserts a timing: the targets of issue #7 are reported as met or missed.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

import common  # this folder's shared helpers (benchmarks/common.py)
from common import PeakResident, compile_seconds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_TERMS = 5
N_POWER_ITERATIONS = 5
COEFF = 0.9
INVERSE_ATOL = 1e-5


@dataclass(frozen=True)
class Workload:
  name: str
  shape: tuple[int, ...]   # per example, channels first (PyTorch); iresflow gets channels last
  blocks: int
  hidden: int
  batch: int

  @property
  def image(self) -> bool:
    return len(self.shape) == 3


def workloads(quick: bool) -> list[Workload]:
  if quick:
    return [Workload("toy", (2,), 2, 16, 32), Workload("fc30", (30,), 2, 16, 16), Workload("image", (4, 6, 6), 2, 8, 4)]
  return [Workload("toy", (2,), 16, 128, 500), Workload("fc30", (30,), 8, 128, 128),
          Workload("image", (4, 14, 14), 8, 64, 64)]


def data(workload: Workload, seed: int = 0) -> np.ndarray:
  """Standard-normal data of the workload's shape (timing does not depend on the values)."""
  return np.random.default_rng(seed).standard_normal((workload.batch, *workload.shape)).astype(np.float32)


def quartiles(times: list[float]) -> tuple[float, float, float]:
  q1, q2, q3 = np.percentile(times, [25, 50, 75])
  return float(q1), float(q2), float(q3)


# ------------------------------------------------------------------------------------------ iresflow
class IresflowSide:
  """The workload as an ``IResNetFlow`` with a pure, jitted train step.

  ``unroll`` sets both loops (blocks and series terms); ``remat`` is ``PowerSeries``' (None, the
  library's default: ``g`` recomputed in the backward pass with the Neumann gradient only).
  """

  def __init__(self, workload: Workload, gradient: str, n_terms: int = N_TERMS, unroll: bool | None = False,
               remat: bool | None = None):
    import jax
    import jax.numpy as jnp
    import optax

    from iresflow.models import IResNetFlow
    from iresflow.nn import FixedPointSolver, LipschitzConstraint, PowerSeries, ResidualSpec

    self.jax = jax
    residual = ResidualSpec(hidden=workload.hidden, kernel_sizes=(3, 1, 3), dense_layers=3, activation="lipswish",
                            preactivation=True, constraint=LipschitzConstraint(
                                coeff=COEFF, n_power_iterations=N_POWER_ITERATIONS, norm_estimator="power"))
    common = dict(actnorm=False, prior="learned", unroll_blocks=unroll)
    if workload.image:
      c, h, w = workload.shape
      self.model = IResNetFlow(data_shape=(h, w, c), stages=(workload.blocks,), residual=residual,
                               initial_squeeze=False, **common)
      self.x = jnp.asarray(data(workload).transpose(0, 2, 3, 1))
    else:
      self.model = IResNetFlow(data_shape=workload.shape, stages=(), fc_blocks=workload.blocks,
                               fc_residual=residual, **common)
      self.x = jnp.asarray(data(workload))
    self.batch = workload.batch
    estimator = PowerSeries(n_terms=n_terms, n_probes=1, probe="gaussian", gradient=gradient, unroll=unroll,
                            remat=remat)
    self.solver = FixedPointSolver(atol=INVERSE_ATOL, rtol=0.0, max_iters=1000)
    variables = jax.jit(lambda key, x: self.model.init(key, x, estimator=estimator))(jax.random.key(0), self.x)
    self.params, self.spectral = variables["params"], variables["spectral"]
    self.optimizer = optax.adam(1e-4)
    self.opt_state = self.optimizer.init(self.params)
    self.n_params = sum(p.size for p in jax.tree.leaves(self.params))
    model, optimizer = self.model, self.optimizer

    def train_step(params, spectral, opt_state, x, key):
      def loss_fn(params):
        log_prob, updated = model.apply({"params": params, "spectral": spectral}, x, estimator=estimator,
                                        rngs={"logdet": key}, mutable=["spectral"])
        return -jnp.mean(log_prob), updated["spectral"]
      (loss, spectral), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), spectral, opt_state, loss

    self.train_step = jax.jit(train_step, donate_argnums=(0, 1, 2))
    self.key = jax.random.key(1)

  def compile_seconds(self) -> float:
    lowered = self.train_step.lower(self.params, self.spectral, self.opt_state, self.x, self.key)
    start = time.perf_counter()
    self.compiled = lowered.compile()
    return time.perf_counter() - start

  def step_flops(self) -> float:
    analysis = self.compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float(analysis.get("flops", float("nan")))

  def step(self, i: int) -> None:
    self.params, self.spectral, self.opt_state, loss = self.train_step(
        self.params, self.spectral, self.opt_state, self.x, self.jax.random.fold_in(self.key, i))
    loss.block_until_ready()

  def make_sampler(self, n: int, precision: str | None = "highest"):
    """``run(i)`` draws ``n`` samples; ``precision`` of ``g`` in the inverse (None: JAX's default)."""
    from iresflow.nn import INVERSE_INFO, inverse_info

    variables = {"params": self.params, "spectral": self.spectral}
    solver = dataclasses.replace(self.solver, precision=precision)
    sample = self.jax.jit(lambda key: self.model.apply(variables, n, solver=solver, method=self.model.sample,
                                                       rngs={"sample": key}, mutable=[INVERSE_INFO]))

    def run(i: int):
      x, state = sample(self.jax.random.key(i))
      x.block_until_ready()
      info = inverse_info(state)
      return float(info.iterations.mean()), bool(info.converged.all())
    return run


# ----------------------------------------------------------------------------------------- normflows
class NormflowsSide:
  """The workload as a ``normflows.NormalizingFlow`` of ``Residual`` blocks."""

  def __init__(self, workload: Workload, gradient: str, n_terms: int = N_TERMS):
    import normflows as nf
    import torch

    self.torch, self.nf = torch, nf
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # normflows' fixed-point inverse stops when (change)^2 < atol + rtol |y|: atol = 1e-10, rtol = 0 is
    # iresflow's max |change| <= 1e-5.
    iresblock = nf.flows.residual.iResBlock
    if not hasattr(iresblock, "_original_inverse_fixed_point"):  # patch once per process
      iresblock._original_inverse_fixed_point = iresblock._inverse_fixed_point
      iresblock._inverse_fixed_point = lambda self_, y, atol=INVERSE_ATOL**2, rtol=0.0: (
          iresblock._original_inverse_fixed_point(self_, y, atol, rtol))
    flows = []
    for _ in range(workload.blocks):
      if workload.image:
        c = workload.shape[0]
        net = nf.nets.LipschitzCNN([c, workload.hidden, workload.hidden, c], [3, 1, 3], lipschitz_const=COEFF,
                                   max_lipschitz_iter=N_POWER_ITERATIONS, init_zeros=False)
      else:
        d = workload.shape[0]
        net = nf.nets.LipschitzMLP([d, workload.hidden, workload.hidden, d], lipschitz_const=COEFF,
                                   max_lipschitz_iter=N_POWER_ITERATIONS, init_zeros=False)
      flows.append(nf.flows.Residual(net, reduce_memory=(gradient == "neumann"), n_power_series=n_terms,
                                     n_samples=1))
    base = nf.distributions.DiagGaussian(workload.shape, trainable=True)
    self.model = nf.NormalizingFlow(base, flows).to(self.device)
    self.x = torch.as_tensor(data(workload), device=self.device)
    # Shapes the convolutions' power-iteration vectors for the real input (normflows does it lazily).
    self.model.forward_kld(self.x).backward()
    self.model.zero_grad()
    nf.utils.update_lipschitz(self.model, 50)
    self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4)
    # geom_p and lamb of each block are unused by the truncated series.
    self.n_params = sum(p.numel() for name, p in self.model.named_parameters()
                        if not name.endswith(("geom_p", "lamb")))

  def synchronize(self) -> None:
    if self.device.type == "cuda":
      self.torch.cuda.synchronize()

  def step(self, i: int) -> None:
    self.optimizer.zero_grad(set_to_none=True)
    loss = self.model.forward_kld(self.x)
    loss.backward()
    self.optimizer.step()
    self.nf.utils.update_lipschitz(self.model, N_POWER_ITERATIONS)
    self.synchronize()

  def make_sampler(self, n: int):
    torch = self.torch

    def run(i: int):
      with torch.no_grad():
        z, _ = self.model.q0(n)
        for flow in self.model.flows:   # sampling direction: each block's fixed-point inverse
          z = flow.iresblock.inverse(z)
      self.synchronize()
      return float("nan"), True
    return run


SIDES = {"iresflow": IresflowSide, "iresflow-unrolled": functools.partial(IresflowSide, unroll=True),
         "normflows": NormflowsSide}
OURS = ("iresflow", "iresflow-unrolled")
# The library's default (unroll=None for both loops, iresflow.core.loops): one of the explicit options on
# every backend today; timed as a side of its own if a default ever mixes them.
DEFAULT = "iresflow-default"
MEMORY_SIDES = {DEFAULT: functools.partial(IresflowSide, unroll=None)}


def default_side(workload: Workload, gradient: str) -> str:
  """The side that runs iresflow's default configuration on this backend for ``workload`` and ``gradient``."""
  from iresflow.core import loops
  blocks = terms = loops.unroll_by_default(fully_connected_neumann=not workload.image and gradient == "neumann")
  if blocks == terms:
    return "iresflow-unrolled" if blocks else "iresflow"
  return DEFAULT


def median(entry: dict) -> float:
  return quartiles(entry["times"])[1]


def best_ours(entry: dict) -> str:
  """The faster iresflow variant (nn.scan over blocks, or unrolled) of one measurement."""
  return min(OURS, key=lambda side: median(entry[side]))


# -------------------------------------------------------------------------------------- measurements
def interleaved_times(calls: dict, warmup: int, repeats: int) -> dict[str, list[float]]:
  """Seconds per call of each of ``calls`` (name -> ``fn(i)``), timed in turns.

  Every callable is warmed up first; then each round calls every one once, so a slow drift of the
  machine (frequency, other load) falls on all sides alike instead of on whichever ran last.
  """
  for name, fn in calls.items():
    for i in range(warmup):
      fn(i)
  times = {name: [] for name in calls}
  for i in range(repeats):
    for name, fn in calls.items():
      start = time.perf_counter()
      fn(warmup + i)
      times[name].append(time.perf_counter() - start)
  return times


def train_cell(workload: Workload, gradient: str, warmup: int, repeats: int, side_names=tuple(SIDES)) -> dict:
  """Training-step times of ``side_names`` on one workload and gradient, interleaved; iresflow's compile
  time and the compiled step's FLOPs (XLA cost analysis) too."""
  sides = {name: SIDES[name](workload, gradient) for name in side_names}
  if default_side(workload, gradient) == DEFAULT:
    sides[DEFAULT] = MEMORY_SIDES[DEFAULT](workload, gradient)
  results = {name: {"params": side.n_params} for name, side in sides.items()}
  for name, side in sides.items():
    if name in OURS + (DEFAULT,):
      results[name]["compile_s"] = side.compile_seconds()
      results[name]["flops"] = side.step_flops()
  times = interleaved_times({name: side.step for name, side in sides.items()}, warmup, repeats)
  for name in sides:
    results[name]["times"] = times[name]
  return results


def trained_side(side_name: str, workload: Workload):
  """A side after a few training steps, so the weights are not at their initial values."""
  side = SIDES[side_name](workload, "backprop")
  for i in range(3):
    side.step(i)
  return side


def make_sampler(side, workload: Workload, precision: str | None = "highest"):
  """``run(i) -> (mean iterations, converged)`` drawing a batch; ``precision``: iresflow's in the inverse."""
  return side.make_sampler(workload.batch, precision) if isinstance(side, IresflowSide) else \
      side.make_sampler(workload.batch)


def sample_cell(workload: Workload, warmup: int, repeats: int, precisions: dict | None = None) -> dict:
  """Sampling times of freshly trained sides, interleaved.

  Args:
    precisions: result key -> (side name, iresflow's matmul precision in the inverse; ignored for
      normflows). Default: every side of :data:`SIDES` at ``'highest'``, keyed by side name.
  """
  precisions = precisions or {name: (name, "highest") for name in SIDES}
  sides = {name: trained_side(name, workload) for name in {side for side, _ in precisions.values()}}
  samplers = {key: make_sampler(sides[side], workload, precision) for key, (side, precision) in precisions.items()}
  infos = {key: sampler(0) for key, sampler in samplers.items()}
  times = interleaved_times(samplers, warmup, repeats)
  return {key: {"times": times[key], "mean_iterations": infos[key][0], "converged": infos[key][1], "n": workload.batch}
          for key in samplers}


def memory_child(side_name: str, workload: Workload, gradient: str, n_terms: int, remat: bool | None = None) -> int:
  """Bytes one training step needs beyond what is live before it (run in a fresh process).

  iresflow on CPU: XLA's memory analysis of the compiled step (its temporary buffers), since XLA:CPU
  keeps freed buffers for reuse and the resident set would not show the step's peak.
  """
  if side_name in MEMORY_SIDES:
    side = MEMORY_SIDES[side_name](workload, gradient, n_terms, remat=remat)
  else:
    side = SIDES[side_name](workload, gradient, n_terms)
  if side_name in OURS + tuple(MEMORY_SIDES):
    import jax
    device = jax.devices()[0]
    if device.platform == "cpu":
      side.compile_seconds()
      return side.compiled.memory_analysis().temp_size_in_bytes
    side.step(0)  # compile / warm up
    before = device.memory_stats()["bytes_in_use"]
    side.step(1)
    return device.memory_stats()["peak_bytes_in_use"] - before
  side.step(0)  # warm up
  if side.device.type == "cuda":
    torch = side.torch
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    side.step(1)
    return torch.cuda.max_memory_allocated() - before
  with PeakResident() as meter:
    before = meter.peak
    side.step(1)
  return meter.peak - before


def peak_memory(side_name: str, workload: Workload, gradient: str, n_terms: int, quick: bool,
                remat: bool | None = None) -> int:
  env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
         "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0",
         "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
  command = [sys.executable, os.path.abspath(__file__), "--memory-child",
             json.dumps([side_name, workload.name, gradient, n_terms, remat])] + (["--quick"] if quick else [])
  out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)
  if out.returncode:
    raise RuntimeError(f"memory measurement {side_name}/{workload.name}/{gradient}/{n_terms} failed:\n"
                       f"{out.stderr[-3000:]}")
  return int(out.stdout.strip().splitlines()[-1])


def matmul_flops_per_second(size: int, repeats: int = 10, precision: str | None = "highest",
                            dtype: str = "float32") -> float:
  """FLOP/s of an ``size x size`` matmul of ``dtype`` arrays at ``precision`` (None: JAX's default)."""
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(0), (size, size), dtype)
  b = jax.random.normal(jax.random.key(1), (size, size), dtype)
  matmul = jax.jit(lambda a, b: jnp.dot(a, b, precision=precision))
  matmul(a, b).block_until_ready()
  times = interleaved_times({"matmul": lambda i: matmul(a, b).block_until_ready()}, 1, repeats)["matmul"]
  return 2 * size**3 / statistics.median(times)


def compile_sizes(quick: bool) -> tuple[tuple[int, ...], int, int]:
  """``(depths, hidden, image size)`` of the compile-time comparison."""
  return ((2, 4), 4, 8) if quick else ((8, 64), 64, 28)


def compile_depths(quick: bool) -> dict[int, float]:
  depths, hidden, image = compile_sizes(quick)
  return {n: compile_seconds(n, hidden, image, unroll=None) for n in depths}  # the backend's default


# ------------------------------------------------------------------------------------------- report
def save_results(results: dict, output: str | None, quick: bool, name: str) -> None:
  """Writes ``results`` as strict JSON to ``output``; without one, to docs/``name``.json unless ``quick``."""
  output = output or (None if quick else os.path.join(ROOT, "docs", f"{name}.json"))
  if output is None:
    return
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  with open(output, "w") as f:
    json.dump(results, f, indent=1, allow_nan=False)


def machine_description() -> str:
  import torch
  return (common.machine_description("normflows") + f"; PyTorch {torch.__version__} "
          f"({'cuda' if torch.cuda.is_available() else 'cpu'}, {torch.get_num_threads()} threads)")


def _fmt_times(times: list[float]) -> str:
  q1, q2, q3 = quartiles(times)
  return f"{1e3 * q2:.1f} ({1e3 * q1:.1f}-{1e3 * q3:.1f})"


def plot(results: dict, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  entries = [(name.replace(" / ", "\n"), e) for name, e in results["train"].items()]
  entries += [(f"{name}\nsampling", e) for name, e in results["sample"].items()]
  labels = [label for label, _ in entries]
  fig, ax = plt.subplots(figsize=(9, 4))
  positions = np.arange(len(labels))
  for offset, side, label in ((-0.27, "iresflow", "iresflow (JAX, nn.scan)"),
                              (0.0, "iresflow-unrolled", "iresflow (JAX, unrolled)"),
                              (0.27, "normflows", "normflows (PyTorch)")):
    ax.bar(positions + offset, [1e3 * median(e[side]) for _, e in entries], 0.27, label=label)
  for p, (_, e) in zip(positions, entries):
    best = median(e[best_ours(e)])
    ax.annotate(f"{median(e['normflows']) / best:.1f}x", (p, 1e3 * max(median(e[s]) for s in SIDES)),
                ha="center", va="bottom", fontsize=8)
  ax.set_xticks(positions, labels, fontsize=8)
  ax.set_yscale("log")
  ax.set_ylabel("median time per call (ms, log scale)")
  ax.set_title(f"Training step and sampling, same workloads (normflows / best iresflow above bars)\n"
               f"{results['backend']}", fontsize=9)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def report(results: dict, command: str) -> str:
  lines = [
      f"# iresflow vs normflows ({results['backend']})", "",
      f"Command: `{command}` ({results['wall_s'] / 60:.1f} min). Machine: {results['machine']}.", "",
      "Workloads and method: see the docstring of `benchmarks/vs_normflows.py` (identical architecture, "
      "data shape, batch, 5-term series with 1 Gaussian probe, Adam, 5 power iterations per layer per step). "
      "Times are medians with the interquartile range in brackets; ratio = normflows / iresflow "
      "(above 1: iresflow faster).", "",
      "## Training step", "",
      "Two explicit options: each stage's blocks under one `nn.scan` and the series terms in one loop body "
      "(`unroll_blocks=False`, `PowerSeries(unroll=False)`; compile time flat in depth), or every block and term "
      "traced (`unroll_blocks=True`, `PowerSeries(unroll=True)`). The default (`None` for both, "
      "`iresflow.core.loops`) is one of the two columns: unrolled on CPU except fully connected blocks with "
      "the Neumann gradient, `nn.scan` elsewhere. All keep "
      "`PowerSeries`' default `remat=None`, which recomputes `g` in the backward pass with the Neumann "
      "gradient (see the memory table). The sides are timed in turns, one step of each per round.", "",
      "| workload / gradient | parameters (ours / theirs) | iresflow nn.scan ms | iresflow unrolled ms | "
      "normflows ms | ratio (scan) | ratio (unrolled) | compile scan / unrolled (s) |",
      "|---|---|---:|---:|---:|---:|---:|---:|",
  ]
  for name, entry in results["train"].items():
    scan, unrolled, theirs = entry["iresflow"], entry["iresflow-unrolled"], entry["normflows"]
    lines.append(f"| {name} | {scan['params']:,} / {theirs['params']:,} | {_fmt_times(scan['times'])} | "
                 f"{_fmt_times(unrolled['times'])} | {_fmt_times(theirs['times'])} | "
                 f"**{median(theirs) / median(scan):.2f}** | **{median(theirs) / median(unrolled):.2f}** | "
                 f"{scan['compile_s']:.1f} / {unrolled['compile_s']:.1f} |")
  lines += ["", "Default configuration against the faster explicit option (ratio = best ms / default ms; 1.00 "
            "when the default is the faster one), with compile times:", "",
            "| workload / gradient | default | default ms | faster option | ratio | compile default / faster (s) |",
            "|---|---|---:|---|---:|---:|"]
  for name, entry in results["train"].items():
    best, default = best_ours(entry), results["default_sides"][name]
    lines.append(f"| {name} | {default} | {median(entry[default]) * 1e3:.1f} | {best} | "
                 f"**{median(entry[best]) / median(entry[default]):.2f}** | "
                 f"{entry[default]['compile_s']:.1f} / {entry[best]['compile_s']:.1f} |")
  lines += ["", "## Sampling (prior draw + fixed-point inverse of every block to max residual 1e-5)", "",
            "| workload | samples per call | iresflow nn.scan ms | iresflow unrolled ms | normflows ms | "
            "ratio (best iresflow) | best iresflow samples/s | normflows samples/s | "
            "iresflow mean iterations (all blocks) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for name, entry in results["sample"].items():
    ours, theirs = entry[best_ours(entry)], entry["normflows"]
    a, b = median(ours), median(theirs)
    lines.append(f"| {name} | {ours['n']} | {_fmt_times(entry['iresflow']['times'])} | "
                 f"{_fmt_times(entry['iresflow-unrolled']['times'])} | {_fmt_times(theirs['times'])} | "
                 f"**{b / a:.2f}** | {ours['n'] / a:,.0f} | {theirs['n'] / b:,.0f} | {ours['mean_iterations']:.1f} |")
  memory = results["memory"]
  lines += ["", f"## Peak memory of one training step ({memory['workload']} workload; {memory['how']})", "",
            "| side / gradient | 2 terms (MiB) | 20 terms (MiB) | 20 / 2 |", "|---|---:|---:|---:|"]
  for name, sizes in memory["rows"].items():
    lines.append(f"| {name} | {sizes['2'] / 2**20:.1f} | {sizes['20'] / 2**20:.1f} | "
                 f"**{sizes['20'] / max(sizes['2'], 1):.2f}** |")
  u = results["utilisation"]
  lines += ["", "## Utilisation and compile time", "",
            f"- Image training step ({u['gradient']}): {u['step_flops'] / 1e9:.2f} GFLOP per step "
            "(XLA cost analysis) in "
            f"{1e3 * u['step_s']:.1f} ms = **{u['step_flops_per_s'] / 1e9:.1f} GFLOP/s**; a {u['matmul_size']}x"
            f"{u['matmul_size']} float32 matmul ran at {u['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s: "
            f"**{100 * u['step_flops_per_s'] / u['matmul_flops_per_s']:.0f}%** of it.",
            "- Compile time of the jitted train step in the default configuration of this backend "
            f"({'unrolled' if results['default_unroll'] else 'nn.scan'}; `benchmarks/compile_time.py`'s model, "
            + ", ".join(f"{n} blocks: {t:.2f} s" for n, t in results["compile"].items())
            + f"): ratio **{list(results['compile'].values())[-1] / list(results['compile'].values())[0]:.2f}**.",
            ""]
  lines += ["## Targets (issues #7 and #15)", "", "| target | measured | met |", "|---|---|---|"]
  for target, measured, met in results["targets"]:
    lines.append(f"| {target} | {measured} | {'yes' if met else '**no**'} |")
  lines.append("")
  return "\n".join(lines)


def targets(results: dict) -> list[tuple[str, str, bool]]:
  rows = []
  default_ratios = {name: median(e[best_ours(e)]) / median(e[results["default_sides"][name]])
                    for name, e in results["train"].items()}
  worst = min(default_ratios, key=default_ratios.get)
  rows.append(("#15: default configuration >= 0.95x the speed of the best explicit option",
               f"lowest {default_ratios[worst]:.2f} ({worst})", default_ratios[worst] >= 0.95))
  memory = results["memory"]["rows"]
  ours, theirs = memory["iresflow / neumann, remat=True"], memory["normflows / neumann"]
  ratio = max(ours[n] / max(theirs[n], 1) for n in ("2", "20"))  # a tiny --quick step may not raise the RSS
  rows.append(("#15: Neumann-gradient step memory (default, remat) <= normflows' reduce_memory, 2 and 20 terms",
               f"largest ratio {ratio:.2f}", ratio <= 1.0))
  train_ratios = {name: median(e["normflows"]) / median(e[best_ours(e)]) for name, e in results["train"].items()}
  worst = min(train_ratios, key=train_ratios.get)
  rows.append(("training step >= 2x faster, every workload and gradient (best iresflow variant)",
               f"lowest ratio {train_ratios[worst]:.2f} ({worst})", train_ratios[worst] >= 2))
  sample_ratios = {name: median(e["normflows"]) / median(e[best_ours(e)]) for name, e in results["sample"].items()}
  worst = min(sample_ratios, key=sample_ratios.get)
  rows.append(("sampling >= 3x faster", f"lowest ratio {sample_ratios[worst]:.2f} ({worst})",
               sample_ratios[worst] >= 3))
  u = results["utilisation"]
  share = u["step_flops_per_s"] / u["matmul_flops_per_s"]
  rows.append(("image step >= 50% of matmul FLOP/s", f"{100 * share:.0f}%", share >= 0.5))
  neumann = results["memory"]["rows"]["iresflow / neumann, remat=True"]
  ratio = neumann["20"] / max(neumann["2"], 1)
  rows.append(("Neumann gradient: peak(20 terms) <= 1.2x peak(2 terms)", f"{ratio:.2f}", ratio <= 1.2))
  depths = list(results["compile"].values())
  rows.append(("64 blocks compile < 2x of 8 blocks", f"{depths[-1] / depths[0]:.2f}", depths[-1] / depths[0] < 2))
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (seconds; a smoke test)")
  parser.add_argument("--output-dir", "--docs-dir", dest="output_dir", default=os.path.join("workdirs", "vs_normflows"),
                      help="results folder (--output-dir docs: the committed results)")
  parser.add_argument("--memory-child", help=argparse.SUPPRESS)
  args = parser.parse_args()
  by_name = {w.name: w for w in workloads(args.quick)}
  if args.memory_child:
    side_name, workload_name, gradient, n_terms, remat = json.loads(args.memory_child)
    print(memory_child(side_name, by_name[workload_name], gradient, n_terms, remat))
    return

  import jax
  start = time.perf_counter()
  warmup, repeats = (1, 2) if args.quick else (3, 20)
  results = {"machine": machine_description(), "train": {}, "sample": {}, "default_sides": {}}
  backend = "GPU" if jax.default_backend() == "gpu" else "CPU"
  results["backend"] = backend
  from iresflow.core import loops
  results["default_unroll"] = loops.unroll_by_default()
  print(results["machine"], flush=True)
  for workload in by_name.values():
    for gradient in ("neumann",) if args.quick else ("backprop", "neumann"):
      name = f"{workload.name} / {gradient}"
      results["train"][name] = train_cell(workload, gradient, warmup, repeats)
      results["default_sides"][name] = default_side(workload, gradient)
      print("train", name, {s: round(1e3 * quartiles(r["times"])[1], 1) for s, r in results["train"][name].items()},
            flush=True)
    results["sample"][workload.name] = sample_cell(workload, warmup, repeats)
    print("sample", workload.name, {s: round(1e3 * quartiles(r["times"])[1], 1)
                                    for s, r in results["sample"][workload.name].items()}, flush=True)

  image = by_name["image"]
  rows = {}
  cells = [("iresflow-default", gradient, remat) for gradient in ("backprop", "neumann") for remat in (False, True)]
  cells += [("normflows", gradient, None) for gradient in ("backprop", "neumann")]
  if args.quick:
    cells = [("iresflow-default", "neumann", True), ("normflows", "neumann", None)]
  for side, gradient, remat in cells:
    name = f"{side.split('-')[0]} / {gradient}" + ("" if remat is None else f", remat={remat}")
    rows[name] = {str(n): peak_memory(side, image, gradient, n, args.quick, remat) for n in (2, 20)}
    print("memory", name, rows[name], flush=True)
  how = ("allocators' peak counters (JAX memory_stats, torch.cuda.max_memory_allocated)" if backend == "GPU"
         else "fresh process per cell; iresflow: XLA's memory analysis of the compiled step (temporary "
              "buffers), normflows: rise of the resident set during the step")
  results["memory"] = {"workload": "image", "how": how, "rows": rows}

  image_entry = results["train"]["image / backprop" if not args.quick else "image / neumann"]
  image_step = image_entry[best_ours(image_entry)]
  matmul_size = 512 if args.quick else (8192 if backend == "GPU" else 2048)
  results["utilisation"] = {
      # XLA's cost analysis counts a loop body once, so the FLOPs come from the unrolled step.
      "gradient": "neumann" if args.quick else "backprop", "step_flops": image_entry["iresflow-unrolled"]["flops"],
      "step_s": median(image_step),
      "step_flops_per_s": image_entry["iresflow-unrolled"]["flops"] / median(image_step),
      "matmul_size": matmul_size, "matmul_flops_per_s": matmul_flops_per_second(matmul_size)}
  results["compile"] = compile_depths(args.quick)
  results["targets"] = targets(results)
  results["wall_s"] = time.perf_counter() - start

  command = " ".join(["python benchmarks/vs_normflows.py", *sys.argv[1:]])
  text = report(results, command)
  print(text)
  os.makedirs(args.output_dir, exist_ok=True)
  stem = "vs_normflows" + ("_gpu" if backend == "GPU" else "")
  with open(os.path.join(args.output_dir, f"{stem}.md"), "w") as f:
    f.write(text + f"\n![iresflow vs normflows]({stem}.png)\n")
  from iresflow.train.workdir import json_ready

  with open(os.path.join(args.output_dir, f"{stem}.json"), "w") as f:
    json.dump(json_ready(results), f, indent=1, allow_nan=False)  # iterations normflows does not report: null
  plot(results, os.path.join(args.output_dir, f"{stem}.png"))


if __name__ == "__main__":
  main()
