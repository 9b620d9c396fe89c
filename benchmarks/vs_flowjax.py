"""iresflow vs flowjax (the maintained JAX flow library), side by side in one run: density, conditional, VI.

Five tasks, three flows each, every flow trained for the same wall-clock budget (``--seconds``, the
first step's compilation not counted) with the same optimizer (Adam 1e-3, gradients clipped at norm 1),
batch size, validation split and early stopping:

* ``wine``, ``diabetes``: tabular density on the data sets scikit-learn ships (13 and 10 columns,
  standardised with the training split's statistics; 80% train, 20% test). Held-out nats per example.
* ``two_moons``: conditional density for simulation-based inference, the two-moons simulator
  (Greenberg et al. 2019; sbibm's ``two_moons``), simulated in JAX: ``theta ~ U(-1, 1)^2``, posterior
  ``p(theta | x)`` learned from 10,000 simulations; held-out ``log p(theta | x)`` on 2,000 more, and
  posterior samples at ``x_o = (0, 0)`` against a reference drawn by sampling-importance-resampling
  with the simulator's exact likelihood.
* ``banana``, ``funnel``: variational inference (reverse KL, 128 samples per step) on a 2-d banana
  (``x1 ~ N(0, 1)``, ``x2 | x1 ~ N(x1^2 / 2, 1/4)``) and Neal's funnel (``v ~ N(0, 9)``,
  ``x | v ~ N(0, e^v)``), both with known normalising constants: ``KL(q || p)`` from 20,000 samples,
  and moments against 10^6 exact draws.

The flows: iresflow's i-ResNet (``iresflow.FlowDistribution``, 8 fully connected blocks, exact
log-det, learned diagonal Gaussian base; conditional tasks add ``context_size`` with a 32-wide context
encoder; its width is chosen to match the MAF's parameter count), trained by ``iresflow.fit`` /
``iresflow.fit_variational``; flowjax 19.1.2's masked autoregressive flow (MAF, affine, 5 layers of
width 50) and its neural spline flow (the same MAF with rational-quadratic splines, 8 knots on
[-4, 4]; more parameters, flowjax's own settings), trained with flowjax's own step and loss
(``flowjax.train.train_utils.step``, ``MaximumLikelihoodLoss``, ``ElboLoss``) in a loop that adds the
time budget (``fit_to_data`` has none). For VI the flowjax flows are built with ``invert=False`` (cheap
sampling), as flowjax recommends.

    pip install -e ".[bench]"                                  # flowjax (and the normflows peer)
    python benchmarks/vs_flowjax.py --docs-dir docs            # 5 tasks x 3 flows x 60 s (~20 min on 2 cores)
    python benchmarks/vs_flowjax.py --quick                    # 1 s, 2 tasks, 2-layer flows, no NSF (the tests)
    python benchmarks/vs_flowjax.py --profile --docs-dir docs  # where the VI step's time goes (~1 min)

Writes ``vs_flowjax.{json,md}`` and ``vs_flowjax_two_moons.png`` into ``--output-dir`` (default
``workdirs/vs_flowjax``). Nothing here decides whether CI passes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import paramax
from flowjax.bijections import RationalQuadraticSpline
from flowjax.distributions import Normal
from flowjax.flows import masked_autoregressive_flow
from flowjax.train.losses import ElboLoss, MaximumLikelihoodLoss
from flowjax.train.train_utils import step as flowjax_step
from tqdm import tqdm

from common import machine_description, write_results  # this folder's shared helpers
from iresflow import FlowDistribution, fit, fit_variational
from iresflow.core import ExactLogDet
from iresflow.models import IResNetFlow
from iresflow.nn import ResidualSpec

LEARNING_RATE, CLIP, BATCH, VAL_FRACTION, PATIENCE = 1e-3, 1.0, 64, 0.1, 30
VI_SAMPLES = 128
MAF_LAYERS, MAF_WIDTH = 5, 50
IRESNET_BLOCKS = 8
QUICK_LAYERS = 2  # --quick: 2 MAF layers and 2 i-ResNet blocks (compile time is most of a smoke test's)


def optimizer() -> optax.GradientTransformation:
  return optax.chain(optax.clip_by_global_norm(CLIP), optax.adam(LEARNING_RATE))


# ------------------------------------------------------------------------------------------- tasks
def tabular(name: str):
  """Standardised ``(train, test)`` of a scikit-learn data set (80/20, fixed split)."""
  from sklearn import datasets
  data = {"wine": datasets.load_wine, "diabetes": datasets.load_diabetes}[name]().data.astype(np.float32)
  order = np.random.default_rng(0).permutation(len(data))
  n_train = int(0.8 * len(data))
  train, test = data[order[:n_train]], data[order[n_train:]]
  mean, std = train.mean(0), train.std(0)
  return (train - mean) / std, (test - mean) / std


def two_moons(key: jax.Array, n: int):
  """``(theta, x)`` pairs of the two-moons simulator (sbibm's definition)."""
  k_theta, k_a, k_r = jax.random.split(key, 3)
  theta = jax.random.uniform(k_theta, (n, 2), minval=-1.0, maxval=1.0)
  a = jax.random.uniform(k_a, (n,), minval=-math.pi / 2, maxval=math.pi / 2)
  r = 0.1 + 0.01 * jax.random.normal(k_r, (n,))
  p = jnp.stack([r * jnp.cos(a) + 0.25, r * jnp.sin(a)], axis=1)
  return theta, p + _moons_shift(theta)


def _moons_shift(theta):
  return jnp.stack([-jnp.abs(theta[:, 0] + theta[:, 1]) / math.sqrt(2), (-theta[:, 0] + theta[:, 1]) / math.sqrt(2)],
                   axis=1)


def two_moons_reference(key: jax.Array, x_o: jax.Array, n: int, n_proposals: int = 2_000_000) -> np.ndarray:
  """Posterior samples at ``x_o`` by sampling-importance-resampling from the prior with the exact likelihood.

  ``p = x_o - shift(theta)`` has density ``N(r; 0.1, 0.01^2) / (pi r)`` in polar coordinates ``(r, a)``
  around ``(0.25, 0)`` for ``|a| < pi/2`` (uniform angle, Jacobian ``1/r``), zero otherwise.
  """
  theta = jax.random.uniform(key, (n_proposals, 2), minval=-1.0, maxval=1.0)
  q = x_o[None] - _moons_shift(theta) - jnp.array([0.25, 0.0])
  r, angle = jnp.linalg.norm(q, axis=1), jnp.arctan2(q[:, 1], q[:, 0])
  log_w = -0.5 * ((r - 0.1) / 0.01) ** 2 - jnp.log(r)
  log_w = jnp.where(jnp.abs(angle) < math.pi / 2, log_w, -jnp.inf)
  weights = np.exp(np.asarray(log_w, np.float64) - float(jnp.max(log_w)))
  picks = np.random.default_rng(0).choice(n_proposals, size=n, p=weights / weights.sum())
  return np.asarray(theta)[picks]


def banana_log_density(x):
  return -0.5 * x[0] ** 2 - 2.0 * (x[1] - 0.5 * x[0] ** 2) ** 2


def funnel_log_density(x):
  v, y = x[0], x[1]
  return -v ** 2 / 18.0 - 0.5 * y ** 2 * jnp.exp(-v) - 0.5 * v


VI_TARGETS = {
    # log density (unnormalised), log Z, exact sampler
    "banana": (banana_log_density, math.log(math.pi),
               lambda rng, n: (lambda x1: np.stack([x1, 0.5 * x1 ** 2 + 0.5 * rng.standard_normal(n)], 1))(
                   rng.standard_normal(n))),
    "funnel": (funnel_log_density, math.log(3.0) + math.log(2 * math.pi),
               lambda rng, n: (lambda v: np.stack([v, np.exp(v / 2) * rng.standard_normal(n)], 1))(
                   3.0 * rng.standard_normal(n))),
}


# ------------------------------------------------------------------------------------------- flows
def n_params_flowjax(flow) -> int:
  return int(sum(a.size for a in jax.tree.leaves(eqx.filter(flow, eqx.is_inexact_array))))


def n_params_iresflow(dist: FlowDistribution) -> int:
  return int(sum(a.size for a in jax.tree.leaves(dist.variables["params"])))


def flowjax_flows(dim: int, cond_dim: int | None, invert: bool, with_spline: bool = True,
                  layers: int = MAF_LAYERS) -> dict:
  """flowjax's MAF and (``with_spline``) its NSF, by name."""
  base = Normal(jnp.zeros(dim))
  common = dict(base_dist=base, cond_dim=cond_dim, flow_layers=layers, nn_width=MAF_WIDTH, invert=invert)
  flows = {"flowjax MAF": masked_autoregressive_flow(jax.random.key(1), **common)}
  if with_spline:
    flows["flowjax NSF"] = masked_autoregressive_flow(jax.random.key(1), **common,
                                                      transformer=RationalQuadraticSpline(knots=8, interval=4))
  return flows


def iresflow_distribution(dim: int, context_size: int, target_params: int, direction: str, x_init=None,
                          context_init=None, blocks: int = IRESNET_BLOCKS) -> FlowDistribution:
  """The i-ResNet whose width gives the parameter count nearest ``target_params``."""
  def model(hidden):
    return IResNetFlow(data_shape=(dim,), stages=(), fc_blocks=blocks, prior="learned",
                       fc_residual=ResidualSpec(hidden=hidden, dense_layers=2), context_size=context_size,
                       context_encoder=(32,) if context_size else ())

  def size(hidden):  # parameter count from shapes alone (no initialisation)
    m = model(hidden)
    shapes = jax.eval_shape(lambda: m.init(jax.random.key(0), jnp.zeros((2, dim)), estimator=ExactLogDet(),
                                           context=jnp.zeros((2, context_size)) if context_size else None))
    return sum(math.prod(a.shape) for a in jax.tree.leaves(shapes["params"]))
  sizes = {h: size(h) for h in (4, 8, 12, 16, 24, 32, 48, 64)}
  best = min(sizes, key=lambda h: abs(sizes[h] - target_params))
  return FlowDistribution.create(jax.random.key(0), model(best), x_init=x_init, context_init=context_init,
                                 direction=direction)


def _partition(flow):
  """Trainable arrays and the rest, as flowjax's own loops split a flow."""
  return eqx.partition(flow, eqx.is_inexact_array, is_leaf=lambda leaf: isinstance(leaf, paramax.NonTrainable))


def train_flowjax_on_data(flow, data: tuple, seconds: float, key) -> tuple:
  """flowjax's ``fit_to_data`` loop (its step and loss; best validation parameters) with a time budget."""
  params, static = _partition(flow)
  opt = optimizer()
  opt_state = opt.init(params)
  loss_fn = MaximumLikelihoodLoss()
  n = len(data[0])
  order = np.random.default_rng(1).permutation(n)
  n_val = int(round(VAL_FRACTION * n))
  val = tuple(jnp.asarray(a[order[:n_val]]) for a in data)
  train = tuple(a[order[n_val:]] for a in data)
  n_train, batch = len(train[0]), min(BATCH, len(train[0]))
  best, best_loss, waited, steps, clock = params, math.inf, 0, 0, 0.0  # clock: training seconds after step 1
  rng = np.random.default_rng(2)
  bar = tqdm(total=int(seconds), desc="  flowjax", unit="s", dynamic_ncols=True, mininterval=1.0)
  while clock < seconds and waited < PATIENCE:
    permutation = rng.permutation(n_train)
    for b in range(n_train // batch):
      start = time.perf_counter()
      key, step_key = jax.random.split(key)
      xs = tuple(jnp.asarray(a[permutation[b * batch:(b + 1) * batch]]) for a in train)
      params, opt_state, loss = flowjax_step(params, static, *xs, optimizer=opt, opt_state=opt_state,
                                             loss_fn=loss_fn, key=step_key)
      loss.block_until_ready()
      clock += (time.perf_counter() - start) if steps else 0.0  # the first step compiles
      steps += 1
      if clock >= seconds:
        break
    val_loss = float(eqx.filter_jit(loss_fn)(params, static, *val))  # validation: off the clock
    if val_loss < best_loss:
      best, best_loss, waited = params, val_loss, 0
    else:
      waited += 1
    bar.n = min(int(clock), int(seconds))
    bar.set_postfix(steps=steps, val=f"{val_loss:.3f}")
  bar.close()
  return paramax.unwrap(eqx.combine(best, static)), steps


def train_flowjax_vi(flow, log_density, seconds: float, key) -> tuple:
  """flowjax's ``fit_to_key_based_loss`` loop with ``ElboLoss`` and a time budget."""
  params, static = _partition(flow)
  opt = optimizer()
  opt_state = opt.init(params)
  loss_fn = ElboLoss(log_density, num_samples=VI_SAMPLES)
  steps, clock = 0, 0.0
  bar = tqdm(total=int(seconds), desc="  flowjax", unit="s", dynamic_ncols=True, mininterval=1.0)
  while clock < seconds:
    start = time.perf_counter()
    key, step_key = jax.random.split(key)
    params, opt_state, loss = flowjax_step(params, static, optimizer=opt, opt_state=opt_state, loss_fn=loss_fn,
                                           key=step_key)
    loss.block_until_ready()
    clock += (time.perf_counter() - start) if steps else 0.0  # the first step compiles
    steps += 1
    if steps % 50 == 0:
      bar.n = min(int(clock), int(seconds))
      bar.set_postfix(steps=steps, loss=f"{float(loss):.3f}")
  bar.close()
  return paramax.unwrap(eqx.combine(params, static)), steps


def _mean_and_se(values) -> tuple[float, float]:
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


# ------------------------------------------------------------------------------------------ cells
def paired_flows(dim: int, cond_dim: int | None, direction: str, quick: bool, x_init=None, context_init=None
                 ) -> tuple[dict, FlowDistribution]:
  """flowjax's flows (cheap density for ``'density'``, cheap sampling otherwise) and the i-ResNet of the
  MAF's parameter count; ``quick``: 2 layers on both sides and the MAF alone."""
  peers = flowjax_flows(dim, cond_dim, invert=direction == "density", with_spline=not quick,
                        layers=QUICK_LAYERS if quick else MAF_LAYERS)
  dist = iresflow_distribution(dim, cond_dim or 0, n_params_flowjax(peers["flowjax MAF"]), direction, x_init=x_init,
                               context_init=context_init, blocks=QUICK_LAYERS if quick else IRESNET_BLOCKS)
  return peers, dist


def density_cell(name: str, train, test, seconds: float, quick: bool = False) -> dict:
  """Each flow fitted to ``train`` (``(x,)`` or ``(x, c)``) for ``seconds``; held-out mean log-prob.

  ``quick``: the MAF alone as the peer, and 2-layer flows on both sides (a smoke test).
  """
  x_train, x_test = train[0], test[0]
  dim = x_train.shape[1]
  cond_dim = train[1].shape[1] if len(train) > 1 else None
  results = {}
  peers, dist = paired_flows(dim, cond_dim, "density", quick, x_init=x_train[:256],
                             context_init=train[1][:256] if cond_dim else None)
  print(f"{name}: iresflow i-ResNet ({n_params_iresflow(dist):,} parameters)", flush=True)
  start = time.perf_counter()
  fitted, losses = fit(jax.random.key(3), dist, x_train, context=train[1] if cond_dim else None, batch_size=BATCH,
                       max_epochs=10**6, max_seconds=seconds, val_fraction=VAL_FRACTION, patience=PATIENCE,
                       optimizer=optimizer())
  log_prob = jax.jit(lambda d, x, c: d.log_prob(x, context=c))(fitted, x_test, test[1] if cond_dim else None)
  mean, se = _mean_and_se(log_prob)
  results["iresflow i-ResNet"] = {"parameters": n_params_iresflow(dist), "test_log_prob": mean, "test_log_prob_se": se,
                                  "epochs": len(losses["train"]), "wall_seconds": time.perf_counter() - start,
                                  "_flow": fitted}
  for peer, flow in peers.items():
    print(f"{name}: {peer} ({n_params_flowjax(flow):,} parameters)", flush=True)
    start = time.perf_counter()
    trained, steps = train_flowjax_on_data(flow, train, seconds, jax.random.key(4))
    log_prob = eqx.filter_jit(lambda f, x, c: f.log_prob(x, c))(trained, jnp.asarray(x_test),
                                                                 jnp.asarray(test[1]) if cond_dim else None)
    mean, se = _mean_and_se(log_prob)
    results[peer] = {"parameters": n_params_flowjax(flow), "test_log_prob": mean, "test_log_prob_se": se,
                     "steps": steps, "wall_seconds": time.perf_counter() - start, "_flow": trained}
  return results


def vi_cell(name: str, seconds: float, quick: bool = False) -> dict:
  """Each flow fitted to the target ``name`` by reverse KL for ``seconds``; ``quick`` as in :func:`density_cell`."""
  log_density, log_z, exact_sampler = VI_TARGETS[name]
  exact = exact_sampler(np.random.default_rng(0), 1_000_000)
  peers, dist = paired_flows(2, None, "sampling", quick)
  results = {}

  def summary(samples, log_q, parameters, **extra):
    samples = np.asarray(samples, np.float64)
    kl = np.asarray(log_q, np.float64) - np.asarray(jax.vmap(log_density)(jnp.asarray(samples, jnp.float32)))
    kl_mean, kl_se = _mean_and_se(kl + log_z)
    return {"parameters": parameters, "kl": kl_mean, "kl_se": kl_se, "mean": samples.mean(0).tolist(),
            "variance": samples.var(0).tolist(), **extra}

  print(f"{name}: iresflow i-ResNet ({n_params_iresflow(dist):,} parameters)", flush=True)
  start = time.perf_counter()
  fitted, losses = fit_variational(jax.random.key(5), dist, log_density, steps=10**7, max_seconds=seconds,
                                   samples_per_step=VI_SAMPLES, optimizer=optimizer())
  samples, log_q = fitted.sample_and_log_prob(jax.random.key(6), 20_000)
  results["iresflow i-ResNet"] = summary(samples, log_q, n_params_iresflow(dist), steps=len(losses),
                                         wall_seconds=time.perf_counter() - start)
  for peer, flow in peers.items():
    print(f"{name}: {peer} ({n_params_flowjax(flow):,} parameters)", flush=True)
    start = time.perf_counter()
    trained, steps = train_flowjax_vi(flow, log_density, seconds, jax.random.key(7))
    samples, log_q = trained.sample_and_log_prob(jax.random.key(6), (20_000,))
    results[peer] = summary(samples, log_q, n_params_flowjax(flow), steps=steps,
                            wall_seconds=time.perf_counter() - start)
  results["exact"] = {"mean": exact.mean(0).tolist(), "variance": exact.var(0).tolist()}
  return results


# ----------------------------------------------------------------------------------------- profile
def kernels_per_call(compiled) -> int:
  """Kernels one call of a compiled program runs: the instructions that do work in its entry
  computation, with each while loop's body counted as many times as its known trip count (XLA:CPU
  runs every such instruction as one kernel call; fusions are one each)."""
  computations, name = {}, None
  for line in compiled.as_text().splitlines():
    header = re.match(r"^(ENTRY )?%([\w.\-]+) ", line)
    if header:
      name = "ENTRY" if header.group(1) else header.group(2)
      computations[name] = []
    elif line.startswith("}"):
      name = None
    elif name is not None and " = " in line:
      computations[name].append(line)
  idle = (" parameter(", " constant(", " tuple(", " get-tuple-element(", " bitcast(")

  def count(computation: str) -> int:
    total = 0
    for line in computations[computation]:
      if any(op in line for op in idle):
        continue
      total += 1
      if " while(" in line:
        body = re.search(r"body=%([\w.\-]+)", line).group(1)
        trips = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', line)
        total += (int(trips.group(1)) if trips else 1) * count(body)
    return total

  return count("ENTRY")


def _cpu_ms_per_call(fn, args, repeats: int) -> float:
  """Median process CPU time of ``fn(*args)`` in ms (CPU time: the reading holds on a shared machine)."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.process_time()
    jax.block_until_ready(fn(*args))
    times.append(1e3 * (time.process_time() - start))
  return float(np.median(times))


def profile_vi(repeats: int) -> dict:
  """Where the i-ResNet's VI step spends its time, next to flowjax's MAF (the banana task's flows).

  Each variant is the jitted gradient of the negative ELBO over 128 samples with respect to the
  parameters (no optimizer): its CPU time per call, XLA's FLOP count and the number of kernels its
  optimised program calls (XLA counts the FLOPs of a while loop's body once; flowjax loops over its
  layers).
  """
  log_density = banana_log_density
  peers, dist = paired_flows(2, None, "sampling", quick=False)
  maf = peers["flowjax MAF"]
  model, variables = dist.model, dist.variables
  key = jax.random.key(0)
  u = jax.random.normal(key, (VI_SAMPLES, 2))

  def iresflow_loss(estimator, with_log_det=True):
    def loss(params):
      v = {**variables, "params": params}
      if not with_log_det:
        x = model.apply(v, u, method=model.forward)
        return -jnp.mean(jax.vmap(log_density)(x))
      x, log_det = model.apply(v, u, estimator=estimator, method=model.forward_and_log_det, rngs={"logdet": key})
      log_q = model.apply(v, u, method=model.prior_log_prob) - log_det
      return jnp.mean(log_q - jax.vmap(log_density)(x))
    return jax.jit(jax.value_and_grad(loss)), (variables["params"],)

  params, static = _partition(maf)
  elbo = ElboLoss(log_density, num_samples=VI_SAMPLES)
  maf_grad = jax.jit(jax.value_and_grad(lambda p: elbo(p, static, key)))
  from iresflow.core import PowerSeries
  variants = {
      "iresflow: exact log-det (what fit_variational runs)": iresflow_loss(dist.estimator),
      "iresflow: 5-term power series, 1 probe": iresflow_loss(PowerSeries(n_terms=5)),
      "iresflow: the blocks alone (no log-det)": iresflow_loss(None, with_log_det=False),
      "flowjax MAF": (maf_grad, (params,)),
  }
  rows = {}
  for name, (fn, args) in variants.items():
    compiled = fn.lower(*args).compile()
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    rows[name] = {"cpu_ms_per_gradient": _cpu_ms_per_call(fn, args, repeats),
                  "flops": float(analysis.get("flops", float("nan"))),
                  "kernels": kernels_per_call(compiled)}
    print(f"  {name}: {rows[name]['cpu_ms_per_gradient']:.3f} ms CPU, {rows[name]['flops'] / 1e6:.2f} MFLOP, "
          f"{rows[name]['kernels']} kernels", flush=True)
  return {"task": "banana", "samples_per_step": VI_SAMPLES, "iresflow_parameters": n_params_iresflow(dist),
          "maf_parameters": n_params_flowjax(maf), "iresflow_blocks": IRESNET_BLOCKS, "repeats": repeats,
          "variants": rows}


def profile_table(profile: dict) -> str:
  maf = profile["variants"]["flowjax MAF"]
  lines = ["| variant | CPU ms per gradient | vs MAF | MFLOP | kernels per call |", "|---|---:|---:|---:|---:|"]
  for name, r in profile["variants"].items():
    ratio = r["cpu_ms_per_gradient"] / maf["cpu_ms_per_gradient"]
    lines.append(f"| {name} | {r['cpu_ms_per_gradient']:.3f} | {ratio:.2f}x | {r['flops'] / 1e6:.2f} "
                 f"| {r['kernels']} |")
  return "\n".join(lines)


# ------------------------------------------------------------------------------------------ report
def moons_figure(flows: dict, reference: np.ndarray, x_o, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(flows) + 1, figsize=(3.2 * (len(flows) + 1), 3.3), sharex=True, sharey=True)
  panels = {"reference (exact likelihood, SIR)": reference, **flows}
  for ax, (title, samples) in zip(axes, panels.items()):
    ax.scatter(samples[:, 0], samples[:, 1], s=1, alpha=0.3)
    ax.set_title(title, fontsize=8)
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1)
    ax.set_aspect("equal")
  fig.suptitle(f"two moons: posterior samples at x_o = {tuple(float(v) for v in x_o)}", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def tables(results: dict) -> str:
  lines = ["## Density (held-out mean log-likelihood, nats per example; higher is better)", "",
           "| task | flow | parameters | test log p ± s.e. | steps or epochs | wall time (s) |",
           "|---|---|---:|---:|---:|---:|"]
  for task in ("wine", "diabetes", "two_moons"):
    for flow, r in results.get(task, {}).items():
      progress = f"{r['epochs']} epochs" if "epochs" in r else f"{r['steps']} steps"
      lines.append(f"| {task} | {flow} | {r['parameters']:,} | {r['test_log_prob']:.3f} ± {r['test_log_prob_se']:.3f} "
                   f"| {progress} | {r['wall_seconds']:.0f} |")
  lines += ["", "## Variational inference (KL(q || p) in nats, lower is better; moments of q vs 10^6 exact draws)", "",
            "| target | flow | parameters | KL ± s.e. | mean | variance | steps |", "|---|---|---:|---:|---|---|---:|"]
  for task in ("banana", "funnel"):
    for flow, r in results.get(task, {}).items():
      mean = ", ".join(f"{v:.2f}" for v in r["mean"])
      variance = ", ".join(f"{v:.2f}" for v in r["variance"])
      if flow == "exact":
        lines.append(f"| {task} | exact draws | | 0 | {mean} | {variance} | |")
      else:
        lines.append(f"| {task} | {flow} | {r['parameters']:,} | {r['kl']:.3f} ± {r['kl_se']:.3f} | {mean} | "
                     f"{variance} | {r['steps']:,} |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seconds", type=float, default=60.0, help="training budget of each flow on each task")
  parser.add_argument("--tasks", nargs="+", default=["wine", "diabetes", "two_moons", "banana", "funnel"])
  parser.add_argument("--output-dir", "--docs-dir", dest="output_dir", default=os.path.join("workdirs", "vs_flowjax"),
                      help="results folder (--docs-dir docs: the committed results)")
  parser.add_argument("--quick", action="store_true",
                      help="a 1-second budget on two_moons (small) and banana, 2-layer flows, MAF as the only "
                           "peer (a smoke test)")
  parser.add_argument("--profile", action="store_true",
                      help="only profile the VI step against the MAF's (vs_flowjax_profile.{json,md})")
  args = parser.parse_args()
  if args.profile:
    profile = profile_vi(repeats=20 if args.quick else 300)
    profile.update(machine=machine_description("flowjax"),
                   command="python benchmarks/vs_flowjax.py --profile --docs-dir docs")
    table = profile_table(profile)
    print(table)
    write_results(args.output_dir, "vs_flowjax_profile", profile,
                  f"# Profile of the VI step: iresflow vs flowjax's MAF\n\nCommand: `{profile['command']}` (written "
                  f"by it, with vs_flowjax_profile.json). Machine: {profile['machine']}. The banana task's flows "
                  f"({profile['iresflow_parameters']:,} and {profile['maf_parameters']:,} parameters); each row is "
                  f"the jitted gradient of the negative ELBO over {profile['samples_per_step']} samples, median of "
                  f"{profile['repeats']} calls.\n\n{table}\n")
    return
  seconds = 1.0 if args.quick else args.seconds
  if args.quick:
    args.tasks = [task for task in args.tasks if task in ("two_moons", "banana")]
  os.makedirs(args.output_dir, exist_ok=True)
  results = {"machine": machine_description("flowjax"), "seconds_per_flow": seconds, "batch_size": BATCH,
             "command": "python benchmarks/vs_flowjax.py --docs-dir docs"}
  for task in args.tasks:
    if task in ("wine", "diabetes"):
      train, test = tabular(task)
      results[task] = density_cell(task, (train,), (test,), seconds, args.quick)
    elif task == "two_moons":
      n_train, n_test = (1000, 200) if args.quick else (10_000, 2_000)
      theta, x = two_moons(jax.random.key(10), n_train + n_test)
      theta, x = np.asarray(theta), np.asarray(x)
      results[task] = density_cell(task, (theta[:n_train], x[:n_train]), (theta[n_train:], x[n_train:]), seconds,
                                   args.quick)
      x_o = jnp.zeros(2)
      reference = two_moons_reference(jax.random.key(11), x_o, 2000, 200_000 if args.quick else 2_000_000)
      samples = {}
      for flow, r in results[task].items():
        trained = r["_flow"]
        if flow.startswith("iresflow"):
          samples[flow] = np.asarray(trained.sample(jax.random.key(12), 2000, context=x_o))
        else:
          samples[flow] = np.asarray(trained.sample(jax.random.key(12), (2000,), condition=x_o))
      moons_figure(samples, reference, x_o, os.path.join(args.output_dir, "vs_flowjax_two_moons.png"))
    elif task in VI_TARGETS:
      results[task] = vi_cell(task, seconds, args.quick)
    else:
      parser.error(f"--tasks: unknown task {task!r}")
    for r in results[task].values():
      r.pop("_flow", None)
    with open(os.path.join(args.output_dir, "vs_flowjax.json"), "w") as f:
      json.dump(results, f, indent=1)
  table = tables(results)
  print(table)
  write_results(args.output_dir, "vs_flowjax", results,
                f"# iresflow vs flowjax\n\nCommand: `{results['command']}` (written by it, with vs_flowjax.json). "
                f"Machine: {results['machine']}; each flow trained for {seconds:.0f} s per task (compilation not "
                f"counted), Adam 1e-3, batch {BATCH}; what each task is: the script's docstring.\n\n{table}\n\n"
                f"![two moons](vs_flowjax_two_moons.png)\n")

if __name__ == "__main__":
  main()
