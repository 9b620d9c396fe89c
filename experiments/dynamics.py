"""Figure 1 of the paper: the dynamics of a 1-D ResNet and of a 1-D i-ResNet.

Both networks are stacks of ``n_blocks`` residual blocks ``h <- h + g(h)`` on scalars, with the same
``g`` (an MLP 1 -> hidden -> hidden -> 1, ELU). They are trained on a fixed set of points of
[-2, 2] to map them to a *noisy* ``x^3`` at half depth and to the *noisy* identity at full depth
(the noise is drawn once, so fitting it needs non-monotone maps). The ResNet is unconstrained; the
i-ResNet's layers are spectrally normalised to ``c < 1`` so ``Lip(g) < 1`` and every block is a
strictly increasing map of the line (``1 + g' > 0``): its trajectories can never cross (Theorem 1).

A *crossing* is a pair of inputs whose order swaps between consecutive depths; the script counts
them over the whole depth for trajectories started from evenly spaced inputs, and plots the
trajectories side by side like the paper's Figure 1.

    python experiments/dynamics.py --docs-dir docs      # docs/dynamics.png + docs/dynamics.json
    python experiments/dynamics.py --quick   # under 10 s on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from iresflow.nn import ContractiveResidual, LipschitzConstraint, ResidualSpec  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ResidualStack1D(nn.Module):
  """``n_blocks`` residual blocks on scalars; returns the trajectory ``(n_blocks + 1, batch, 1)``.

  Attributes:
    n_blocks: depth.
    hidden: hidden width of each ``g``.
    coeff: spectral-normalisation coefficient of every layer; None for the plain ResNet.
  """

  n_blocks: int = 20
  hidden: int = 32
  coeff: float | None = 0.9

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    constraint = LipschitzConstraint(coeff=self.coeff, n_power_iterations=5, norm_estimator="power")
    spec = ResidualSpec(hidden=self.hidden, dense_layers=3, activation="elu", preactivation=False,
                        constraint=constraint)
    trajectory = [x]
    for i in range(self.n_blocks):
      g = ContractiveResidual(spec, name=f"g{i}")
      x = x + g(x)
      trajectory.append(x)
    return jnp.stack(trajectory)


def crossings(trajectory: np.ndarray) -> int:
  """Pairs of trajectories whose order swaps between consecutive depths, summed over depths.

  Args:
    trajectory: ``(depth + 1, n)`` values of ``n`` trajectories.
  """
  total = 0
  for before, after in zip(trajectory[:-1], trajectory[1:]):
    order = np.sign(before[:, None] - before[None, :])
    total += int(np.sum(np.triu(order * np.sign(after[:, None] - after[None, :]) < 0, 1)))
  return total


def train(coeff: float | None, points: np.ndarray, cube_target: np.ndarray, identity_target: np.ndarray,
          n_blocks: int, hidden: int, steps: int, seed: int = 0):
  model = ResidualStack1D(n_blocks=n_blocks, hidden=hidden, coeff=coeff)
  x = jnp.asarray(points)[:, None]
  variables = model.init(jax.random.key(seed), x)
  params, spectral = variables["params"], variables.get("spectral", {})
  optimizer = optax.adam(optax.cosine_decay_schedule(3e-3, steps, alpha=0.1))
  opt_state = optimizer.init(params)
  half = n_blocks // 2

  @jax.jit
  def step(params, spectral, opt_state):
    def loss_fn(params):
      trajectory, updated = model.apply({"params": params, "spectral": spectral}, x, mutable=["spectral"])
      loss = (jnp.mean((trajectory[half, :, 0] - cube_target) ** 2)
              + jnp.mean((trajectory[-1, :, 0] - identity_target) ** 2))
      return loss, updated.get("spectral", {})
    (loss, spectral), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), spectral, opt_state, loss

  for _ in range(steps):
    params, spectral, opt_state, loss = step(params, spectral, opt_state)
  return model, {"params": params, "spectral": spectral}, float(loss)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
  parser.add_argument("--output-dir", "--docs-dir", dest="output_dir", default=os.path.join("workdirs", "dynamics"),
                      help="results folder (--docs-dir docs: the committed results)")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  n_blocks, hidden, steps, n_points = (6, 8, 1000, 20) if args.quick else (20, 32, 3000, 60)
  start = time.perf_counter()
  rng = np.random.default_rng(args.seed)
  points = np.linspace(-2, 2, n_points).astype(np.float32)
  cube_target = (points**3 + rng.normal(0, 0.8, n_points)).astype(np.float32)
  identity_target = (points + rng.normal(0, 0.3, n_points)).astype(np.float32)
  shown = np.linspace(-2, 2, 41).astype(np.float32)[:, None]

  results, trajectories = {}, {}
  for name, coeff in (("ResNet", None), ("i-ResNet (c = 0.9)", 0.9)):
    model, variables, loss = train(coeff, points, cube_target, identity_target, n_blocks, hidden, steps, args.seed)
    trajectory = np.asarray(model.apply(variables, jnp.asarray(shown)))[:, :, 0]
    trajectories[name] = trajectory
    results[name] = {"final_loss": loss, "crossings": crossings(trajectory)}
    print(f"{name}: training loss {loss:.3f}, crossings {results[name]['crossings']}", flush=True)

  fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True)
  depth = np.arange(n_blocks + 1)
  for ax, (name, trajectory) in zip(axes, trajectories.items()):
    colors = plt.cm.viridis(np.linspace(0, 1, trajectory.shape[1]))
    for i in range(trajectory.shape[1]):
      ax.plot(depth, trajectory[:, i], color=colors[i], lw=0.9)
    ax.scatter(np.full(n_points, n_blocks // 2), cube_target, s=6, c="red", zorder=3, label="noisy $x^3$ targets")
    ax.scatter(np.full(n_points, n_blocks), identity_target, s=6, c="black", zorder=3, label="noisy identity targets")
    ax.set_title(f"{name}: {results[name]['crossings']} crossings")
    ax.set_xlabel("depth (block)")
    ax.set_ylim(-9, 9)
  axes[0].set_ylabel("value")
  axes[0].legend(fontsize=7, loc="upper left")
  fig.suptitle("Trajectories of 41 inputs in [-2, 2] (Behrmann et al. 2019, Figure 1)", fontsize=10)
  fig.tight_layout()
  os.makedirs(args.output_dir, exist_ok=True)
  fig.savefig(os.path.join(args.output_dir, "dynamics.png"), dpi=120)
  plt.close(fig)
  results["config"] = {"n_blocks": n_blocks, "hidden": hidden, "steps": steps, "n_points": n_points,
                       "seconds": time.perf_counter() - start}
  with open(os.path.join(args.output_dir, "dynamics.json"), "w") as f:
    json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
