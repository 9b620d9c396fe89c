"""The fixed-point inverse (Algorithm 1): reconstruction error vs iterations, with the Banach bound.

For c in {0.5, 0.7, 0.9, 0.99}:

1. **One block** (3x3 -> 1x1 -> 3x3 convolutions, 32 hidden channels, ELU, on squeezed 8x8 digits,
   4x4x4), at initialisation: ``y = F(x)`` for test images, then the error ``||x_k - x||_2`` of the
   k-th fixed-point iterate (``x_0 = y``) per example, against the a-priori Banach bound
   ``L^k / (1 - L) * ||x_1 - x_0||_2 = L^k / (1 - L) * ||g(y)||_2`` with ``L`` the *certified*
   ``Lip(g)`` of the block (``iresflow.certify``: float64 SVD / exact operator norms times the
   activations' constants).
2. **Whole digits flows** (the demo's architecture: 2 stages x 4 blocks with ActNorm) at
   initialisation and after training with coefficient c: the reconstruction error
   ``max |F^{-1}_k(F(x)) - x|`` over test images when every block runs exactly k iterations, and the
   certified ``Lip(g)`` of every block after training.

    python experiments/inverse.py --docs-dir docs            # docs/inverse.png + docs/inverse.md
    python experiments/inverse.py --quick   # ~20 s on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from absl import logging
from tqdm import tqdm

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import iresflow  # noqa: E402
from iresflow.certificate import certify_block  # noqa: E402
from iresflow.core import jit_run_once  # noqa: E402
from iresflow.data import load_image_dataset  # noqa: E402
from iresflow.nn import (BlockView, FixedPointSolver, IResNetBlock, LipschitzConstraint, PowerSeries,  # noqa: E402
                         ResidualSpec, squeeze)
from iresflow.train import build_model, load_config, load_variables, train_and_evaluate  # noqa: E402
from iresflow.train.tasks import DensityPreprocessing  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
COEFFS = (0.5, 0.7, 0.9, 0.99)


def single_block_curves(c: float, x: jax.Array, iterations: np.ndarray) -> dict:
  """Errors of the fixed-point iterates of one block at init, and the Banach bound."""
  block = IResNetBlock(ResidualSpec(hidden=32, activation="elu", preactivation=False,
                                    constraint=LipschitzConstraint(coeff=c)))
  variables = block.init(jax.random.key(0), x)
  y = block.apply(variables, x)
  g_of_y = block.apply(variables, y, method=block.residual)
  lip = certify_block(BlockView("block", block, variables, tuple(x.shape[1:]))).lipschitz_bound
  per_example = lambda a: np.sqrt(np.sum(np.square(np.asarray(a, np.float64)).reshape(a.shape[0], -1), 1))
  step0 = per_example(g_of_y)
  inverse = jax.jit(lambda v, y, solver: block.apply(v, y, solver=solver, method=block.inverse), static_argnums=2)
  errors, bounds = [], []
  for k in tqdm(iterations, desc=f"c={c}: one block, inverse per iteration count", dynamic_ncols=True):
    x_k = inverse(variables, y, FixedPointSolver(atol=0.0, rtol=0.0, max_iters=int(k)))
    errors.append(per_example(x_k - x).max())
    bounds.append((lip ** k / (1 - lip) * step0).max())
  return {"lipschitz_bound": lip, "errors": np.array(errors), "bounds": np.array(bounds)}


def flow_reconstruction(model, variables, x: jax.Array, iterations: np.ndarray, desc: str) -> np.ndarray:
  z = jax.jit(lambda v, x: model.apply(v, x, method=model.forward))(variables, x)
  inverse = jax.jit(lambda v, z, solver: model.apply(v, z, solver=solver, method=model.inverse), static_argnums=2)
  return np.array([float(jnp.max(jnp.abs(inverse(variables, z, FixedPointSolver(0.0, 0.0, int(k))) - x)))
                   for k in tqdm(iterations, desc=desc, dynamic_ncols=True)])


def main() -> None:
  logging.set_verbosity(logging.WARNING)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
  parser.add_argument("--output-dir", "--docs-dir", dest="output_dir", default=os.path.join("workdirs", "inverse"),
                      help="results folder (--docs-dir docs: the committed results)")
  parser.add_argument("--steps", type=int, default=None, help="training steps per flow (default 600; quick 2)")
  args = parser.parse_args()
  start = time.perf_counter()
  steps_per_flow = args.steps or (2 if args.quick else 600)
  iterations = np.array([0, 3] if args.quick else [0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60])
  coeffs = (0.9,) if args.quick else COEFFS
  data = load_image_dataset("digits")
  preprocessing = DensityPreprocessing(data.num_levels)
  n_test = 32 if args.quick else 256
  x_images, _ = preprocessing(jax.random.key(3), jnp.asarray(data.test_images[:n_test]))
  x_squeezed = squeeze(x_images)

  results = {"iterations": iterations.tolist(), "steps": steps_per_flow, "coeffs": {}}
  with tempfile.TemporaryDirectory() as tmp:
    for c in coeffs:
      single = single_block_curves(c, x_squeezed, iterations)
      config = load_config(os.path.join(HERE, "configs", "digits_flow.py"))
      config.model.residual.constraint.coeff = c
      config.num_steps = steps_per_flow
      config.checkpoint_every = 0
      config.num_eval_examples = 64
      config.num_samples = 4
      config.eval_estimator = {"kind": "series", "n_terms": 5, "n_probes": 1, "probe": "gaussian"}
      if args.quick:
        config.model.stages = (1, 1)
        config.model.residual.hidden = 8
        config.num_eval_examples = config.eval_batch_size = 32
        config.eval_refresh_iterations = 1
      workdir = os.path.join(tmp, f"c{c}")
      os.makedirs(workdir)
      model = build_model(config, data.image_shape, data.num_classes)
      init_variables = jit_run_once(lambda key, x: model.init(key, x, estimator=PowerSeries()))(jax.random.key(0), x_images)
      at_init = flow_reconstruction(model, init_variables, x_images, iterations,
                                    f"c={c}: flow at init, inverse per iteration count")
      train_results = train_and_evaluate(config, workdir)
      model, trained, _ = load_variables(workdir)
      trained_errors = flow_reconstruction(model, trained, x_images, iterations,
                                           f"c={c}: trained flow, inverse per iteration count")
      certificate = iresflow.certify(model, trained)
      results["coeffs"][str(c)] = {
          "single_block": {"lipschitz_bound": single["lipschitz_bound"], "errors": single["errors"].tolist(),
                           "bounds": single["bounds"].tolist()},
          "flow_init": at_init.tolist(), "flow_trained": trained_errors.tolist(),
          "trained_block_bounds": [b.lipschitz_bound for b in certificate.blocks],
          "trained_certified": certificate.certified,
          "test_bits_per_dim": train_results.get("test_bits_per_dim")}
      print(f"c={c}: single-block Lip bound {single['lipschitz_bound']:.4f}; trained max Lip bound "
            f"{certificate.max_lipschitz_bound:.4f}; error after {iterations[-1]} iterations: "
            f"init {at_init[-1]:.2e}, trained {trained_errors[-1]:.2e}", flush=True)
  results["seconds"] = time.perf_counter() - start

  fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
  colors = dict(zip(COEFFS, plt.cm.plasma(np.linspace(0, 0.85, len(COEFFS)))))
  floor = 1e-8
  for c in coeffs:
    entry = results["coeffs"][str(c)]
    single = entry["single_block"]
    axes[0].semilogy(iterations, np.maximum(single["errors"], floor), color=colors[c],
                     label=f"c={c}: measured (Lip bound {single['lipschitz_bound']:.3f})")
    axes[0].semilogy(iterations, single["bounds"], color=colors[c], ls="--")
    axes[1].semilogy(iterations, np.maximum(entry["flow_init"], floor), color=colors[c], ls=":",
                     label=f"c={c}: at init")
    axes[1].semilogy(iterations, np.maximum(entry["flow_trained"], floor), color=colors[c],
                     label=f"c={c}: trained (max Lip bound {max(entry['trained_block_bounds']):.3f})")
  axes[0].set_title("one block at init: max_x ||x_k - x||_2 (solid)\nvs Banach bound L^k/(1-L)||g(y)|| (dashed)",
                    fontsize=9)
  axes[1].set_title(f"whole digits flow (8 blocks), k iterations per block:\nmax |x_k - x|, "
                    f"at init (dotted) and after {steps_per_flow} steps (solid)", fontsize=9)
  for ax in axes:
    ax.set_xlabel("fixed-point iterations k")
    ax.set_ylim(floor / 2, 1e3)
    ax.legend(fontsize=6.5)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("reconstruction error")
  fig.tight_layout()
  os.makedirs(args.output_dir, exist_ok=True)
  fig.savefig(os.path.join(args.output_dir, "inverse.png"), dpi=120)
  plt.close(fig)
  with open(os.path.join(args.output_dir, "inverse.json"), "w") as f:
    json.dump(results, f, indent=1)

  def first_below(errors, tol=1e-5):
    hits = [int(k) for k, e in zip(iterations, errors) if e <= tol]
    return str(hits[0]) if hits else f"> {iterations[-1]}"

  lines = ["| c | one block: certified Lip(g) | iterations to 1e-5, one block | flow at init: iterations to 1e-5 "
           "| trained flow: iterations to 1e-5 | trained: certified Lip(g) per block (max) | all certified |",
           "|---:|---:|---:|---:|---:|---:|---|"]
  for c in coeffs:
    e = results["coeffs"][str(c)]
    bounds = e["trained_block_bounds"]
    lines.append(f"| {c} | {e['single_block']['lipschitz_bound']:.4f} | {first_below(e['single_block']['errors'])} | "
                 f"{first_below(e['flow_init'])} | {first_below(e['flow_trained'])} | "
                 f"{', '.join(f'{b:.3f}' for b in bounds)} (**{max(bounds):.3f}**) | "
                 f"{'yes' if e['trained_certified'] else 'no'} |")
  table = "\n".join(lines)
  print(table)
  with open(os.path.join(args.output_dir, "inverse.md"), "w") as f:
    f.write(table + "\n")


if __name__ == "__main__":
  main()
