"""Figure 2 of the paper: 2-D densities learned by an i-ResNet flow and by a Glow-style baseline.

On each toy density, both models get the same number of steps and blocks, the same batch size,
optimizer and learning rate, and about the same number of parameters (the baseline's coupling
width is chosen to match the i-ResNet's count):

* i-ResNet: ``IResNetFlow`` with ``n_blocks`` fully connected blocks (ActNorm, then ``g`` = LipSwish
  MLP 2 -> H -> H -> 2, c = 0.9), trained with the 5-term power series (Algorithm 2); evaluated with
  the exact log-det (2x2 Jacobians).
* Glow: ``n_blocks`` steps of ActNorm -> learned 2x2 mixing -> affine coupling (``iresflow.baselines.glow``).

Writes a figure (per row: data, then each model's density and 20,000 of its samples) and a table of
test log-likelihoods (nats, on fresh samples).

    python experiments/toy_densities.py --docs-dir docs          # docs/toy_densities.png + .md
    python experiments/toy_densities.py --quick   # ~10 s on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from iresflow.baselines import GlowFlow, matching_width, parameter_count  # noqa: E402
from iresflow.data import sample_toy  # noqa: E402
from iresflow.models import IResNetFlow  # noqa: E402
from iresflow.nn import (INVERSE_INFO, ExactLogDet, FixedPointSolver, LipschitzConstraint, PowerSeries,  # noqa: E402
                         ResidualSpec, inverse_info)
from iresflow.train.fitting import fit  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOYS = ("8gaussians", "checkerboard", "2spirals", "pinwheel")
LIMIT = 4.0


def train(model, variables, log_prob_fn, toy: str, steps: int, batch: int, seed: int):
  """Adam on ``-mean log p``; returns the trained variables. ``log_prob_fn(variables, x, key)``."""
  optimizer = optax.adam(optax.cosine_decay_schedule(2e-3, steps, alpha=0.05))
  data = sample_toy(toy, steps * batch, seed + 1).reshape(steps, batch, 2)

  def loss_fn(variables, x, key):
    log_prob, updated = log_prob_fn(variables, x, key)
    return -jnp.mean(log_prob), updated

  return fit(variables, loss_fn, optimizer, lambda i: data[i], steps, jax.random.key(seed),
             desc=f"{toy}, {type(model).__name__}: train")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
  parser.add_argument("--output-dir", "--docs-dir", dest="output_dir",
                      default=os.path.join("workdirs", "toy_densities"),
                      help="results folder (--docs-dir docs: the committed results)")
  parser.add_argument("--steps", type=int, default=None)
  args = parser.parse_args()
  toys = TOYS[:1] if args.quick else TOYS
  n_blocks, hidden, steps, batch, n_test, grid = ((2, 16, 20, 64, 512, 40) if args.quick
                                                 else (10, 64, 2500, 500, 20000, 160))
  steps = args.steps or steps
  xs = np.linspace(-LIMIT, LIMIT, grid, dtype=np.float32)
  points = jnp.asarray(np.stack(np.meshgrid(xs, xs), -1).reshape(-1, 2))

  residual = ResidualSpec(hidden=hidden, dense_layers=3, activation="lipswish", constraint=LipschitzConstraint(0.9))
  iresnet = IResNetFlow(data_shape=(2,), stages=(), fc_blocks=n_blocks, fc_residual=residual)
  series = PowerSeries(n_terms=5)
  exact = ExactLogDet()
  results, images = {}, {}
  for toy in toys:
    x_init = jnp.asarray(sample_toy(toy, batch, 0))
    ires_vars = iresnet.init(jax.random.key(0), x_init, estimator=series)
    n_ires = parameter_count(ires_vars["params"])
    # The baseline's width so that its parameter count is closest to the i-ResNet's.
    glow_hidden = matching_width(lambda h: GlowFlow(n_blocks, h), n_ires, x_init)
    glow = GlowFlow(n_blocks, glow_hidden)
    glow_vars = glow.init(jax.random.key(0), x_init)

    start = time.perf_counter()
    ires_vars = train(iresnet, ires_vars, lambda v, x, key: iresnet.apply(
        v, x, estimator=series, rngs={"logdet": key}, mutable=["spectral"]), toy, steps, batch, 0)
    ires_seconds = time.perf_counter() - start
    start = time.perf_counter()
    glow_vars = train(glow, glow_vars, lambda v, x, key: (glow.apply(v, x), {}), toy, steps, batch, 0)
    glow_seconds = time.perf_counter() - start

    test = jnp.asarray(sample_toy(toy, n_test, 12345))
    ires_log_prob = jax.jit(lambda x: iresnet.apply(ires_vars, x, estimator=exact))
    glow_log_prob = jax.jit(lambda x: glow.apply(glow_vars, x))
    results[toy] = {
        "iresnet_params": n_ires, "glow_params": parameter_count(glow_vars["params"]), "glow_hidden": glow_hidden,
        "iresnet_test_log_likelihood": float(jnp.mean(ires_log_prob(test))),
        "glow_test_log_likelihood": float(jnp.mean(glow_log_prob(test))),
        "iresnet_seconds": ires_seconds, "glow_seconds": glow_seconds}
    z = jax.random.normal(jax.random.key(7), (20000 if not args.quick else 512, 2))
    ires_samples, state = jax.jit(lambda z: iresnet.apply(ires_vars, z, solver=FixedPointSolver(),
                                                          method=iresnet.inverse, mutable=[INVERSE_INFO]))(z)
    results[toy]["iresnet_samples_converged"] = bool(jnp.all(inverse_info(state).converged))
    glow_samples = jax.jit(lambda z: glow.apply(glow_vars, z, method=glow.sample))(z)
    images[toy] = (sample_toy(toy, 20000, 7),
                   np.exp(np.asarray(ires_log_prob(points))).reshape(grid, grid), np.asarray(ires_samples),
                   np.exp(np.asarray(glow_log_prob(points))).reshape(grid, grid), np.asarray(glow_samples))
    print(toy, {k: round(v, 3) if isinstance(v, float) else v for k, v in results[toy].items()}, flush=True)

  fig, axes = plt.subplots(len(toys), 5, figsize=(12, 2.5 * len(toys)), squeeze=False)
  extent = (-LIMIT, LIMIT, -LIMIT, LIMIT)
  histogram = dict(bins=grid, range=[[-LIMIT, LIMIT]] * 2, cmap="magma")
  for row, toy in enumerate(toys):
    data, ires_density, ires_samples, glow_density, glow_samples = images[toy]
    r = results[toy]
    axes[row, 0].hist2d(data[:, 0], data[:, 1], **histogram)
    axes[row, 0].set_ylabel(toy)
    axes[row, 1].imshow(ires_density, origin="lower", extent=extent, cmap="magma")
    axes[row, 2].hist2d(ires_samples[:, 0], ires_samples[:, 1], **histogram)
    axes[row, 3].imshow(glow_density, origin="lower", extent=extent, cmap="magma")
    axes[row, 4].hist2d(glow_samples[:, 0], glow_samples[:, 1], **histogram)
    axes[row, 1].set_title(f"i-ResNet density: {r['iresnet_test_log_likelihood']:.3f} nats", fontsize=8)
    axes[row, 2].set_title("i-ResNet samples", fontsize=8)
    axes[row, 3].set_title(f"Glow density: {r['glow_test_log_likelihood']:.3f} nats", fontsize=8)
    axes[row, 4].set_title("Glow samples", fontsize=8)
    for ax in axes[row]:
      ax.set_xticks([])
      ax.set_yticks([])
  axes[0, 0].set_title("data", fontsize=8)
  fig.suptitle(f"Densities after {steps} steps, {n_blocks} blocks each, ~equal parameters "
               "(test log-likelihood, higher is better)", fontsize=8)
  fig.tight_layout()
  os.makedirs(args.output_dir, exist_ok=True)
  fig.savefig(os.path.join(args.output_dir, "toy_densities.png"), dpi=110)
  plt.close(fig)

  lines = ["| density | parameters i-ResNet / Glow | test log-likelihood i-ResNet (nats) | Glow (nats) | "
           "train time i-ResNet / Glow (s) |", "|---|---|---:|---:|---|"]
  for toy, r in results.items():
    best = max(r["iresnet_test_log_likelihood"], r["glow_test_log_likelihood"])
    fmt = lambda v: f"**{v:.3f}**" if v == best else f"{v:.3f}"
    lines.append(f"| {toy} | {r['iresnet_params']:,} / {r['glow_params']:,} | "
                 f"{fmt(r['iresnet_test_log_likelihood'])} | {fmt(r['glow_test_log_likelihood'])} | "
                 f"{r['iresnet_seconds']:.0f} / {r['glow_seconds']:.0f} |")
  table = "\n".join(lines)
  print(table)
  with open(os.path.join(args.output_dir, "toy_densities.md"), "w") as f:
    f.write(table + "\n")
  with open(os.path.join(args.output_dir, "toy_densities.json"), "w") as f:
    json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
