"""Classification on real MNIST at CPU scale: the i-ResNet (c = 0.9) vs its ResNet twin, and the inverse.

Both models: ``experiments/configs/mnist_classifier_cpu.py`` (injective padding, 3 stages of 2
blocks with invertible downsampling, 16-32-64 channels, ELU; LayerNorm -> ReLU -> pool -> linear
head), the same training (Adam, cosine schedule, batch 64, the same steps and data order) on the
60,000 training images, test error on the 10,000 test images. The twin has ``coeff=None`` (no
spectral normalisation). The i-ResNet is certified afterwards (every block's rigorous ``Lip(g)``
bound), and, as the paper shows, is invertible up to its head: test digits are mapped to their
features (the input of the pooling head, 7x7x64 numbers for 784 pixels) and back by the fixed-point
inverse (``IResNetClassifier.inverse``). The ResNet twin's features go through the same iteration,
which nothing makes converge.

    python -m iresflow.data.prepare mnist --data-dir ~/tensorflow_datasets        # once (~30 s)
    python experiments/mnist_classification.py --data-dir ~/tensorflow_datasets --docs-dir docs  # 2 runs + inverse
    python experiments/mnist_classification.py --quick       # synthetic data, ~25 s on 2 CPU cores

``--models i-ResNet`` (or ``"ResNet twin"``) runs one of the two.

Writes ``mnist_classification.json``, ``mnist_classification.md`` and
``mnist_classification_inverse.png`` into ``--output-dir``
(default ``workdirs/mnist_classification``; ``--docs-dir docs`` for the committed results).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from unittest import mock

import jax
import numpy as np
from absl import logging

from iresflow.data import load_image_dataset
from iresflow.nn import INVERSE_INFO, FixedPointSolver, inverse_info
from iresflow.train import load_config, load_variables, train_and_evaluate
from iresflow.train.tasks import ClassificationTask
from iresflow.train.workdir import json_ready

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
N_INVERTED = 256
MODELS = {"i-ResNet": 0.9, "ResNet twin": None}  # name: coeff


def invert_test_images(workdir: str, images: np.ndarray) -> dict:
  """Maps ``images`` (uint8) to the trained classifier's features and back; errors and solver reports."""
  model, variables, _ = load_variables(workdir)
  x = ClassificationTask(model, num_levels=256).model_input(None, images)  # the scaling the model trained on
  features = jax.jit(lambda x: model.apply(variables, x, method=model.features))(x)
  solver = FixedPointSolver(atol=1e-6, rtol=1e-6, max_iters=500)
  x_back, state = jax.jit(lambda f: model.apply(variables, f, solver=solver, method=model.inverse,
                                                mutable=[INVERSE_INFO]))(features)
  info = inverse_info(state)
  error = np.abs(np.asarray(x_back) - np.asarray(x)).reshape(len(x), -1).max(axis=1)
  return {"x": np.asarray(x), "x_back": np.asarray(x_back), "n_images": len(x),
          "feature_shape": list(features.shape[1:]),
          "max_abs_error": float(error.max()), "median_abs_error": float(np.median(error)),
          "not_converged": int(np.sum(~np.asarray(info.converged))),
          "mean_iterations_per_block": float(np.mean(info.iterations))}


def figure(inverses: dict, path: str, n: int = 10) -> None:
  from matplotlib.figure import Figure

  rows = [("test digits", next(iter(inverses.values()))["x"])] + [
      (f"{name}: features -> inverse (max err {r['max_abs_error']:.1e})", r["x_back"])
      for name, r in inverses.items()]
  fig = Figure(figsize=(n * 0.8, len(rows) * 1.0))
  axes = fig.subplots(len(rows), n, squeeze=False)
  for row, (title, images) in enumerate(rows):
    for col in range(n):
      ax = axes[row, col]
      ax.imshow(np.clip(images[col, ..., 0] + 0.5, 0, 1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
      ax.axis("off")
    axes[row, 0].set_title(title, fontsize=8, loc="left")
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def synthetic_mnist_loader(name, data_dir=None, download=False):
  """Random 28x28 images in place of MNIST for the smoke test (``--quick``)."""
  from iresflow.data import ImageDataset

  del name, data_dir, download
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (300, 28, 28, 1), dtype=np.uint8)
  labels = rng.integers(0, 10, 300).astype(np.int32)
  return ImageDataset("mnist", images[:200], labels[:200], images[200:], labels[200:], 256, 10)


def main() -> None:
  logging.set_verbosity(logging.WARNING)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data-dir", default=None, help="TFDS data_dir holding the prepared mnist")
  parser.add_argument("--steps", type=int, default=None, help="training steps (default: the config's)")
  parser.add_argument("--quick", action="store_true", help="synthetic data, tiny model, 3 steps")
  parser.add_argument("--output-dir", "--docs-dir", dest="output_dir",
                      default=os.path.join("workdirs", "mnist_classification"),
                      help="results folder (--docs-dir docs: the committed results)")
  parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
  args = parser.parse_args()
  runs, inverses = {}, {}
  load_data = synthetic_mnist_loader if args.quick else load_image_dataset
  # --quick: the trainer reads the synthetic images in place of MNIST.
  synthetic = (mock.patch("iresflow.train.setup.load_image_dataset", synthetic_mnist_loader) if args.quick
               else contextlib.nullcontext())
  data = load_data("mnist", data_dir=args.data_dir)
  test_images = data.test_images[:16 if args.quick else N_INVERTED]
  test_set = f"{len(data.test_images):,} {'synthetic ' if args.quick else ''}test images"
  with tempfile.TemporaryDirectory() as tmp, synthetic:
    for name in args.models:
      coeff = MODELS[name]
      config = load_config(os.path.join(HERE, "configs", "mnist_classifier_cpu.py"))
      config.data_dir = args.data_dir
      config.model.residual.constraint.coeff = coeff
      if args.steps:
        config.num_steps = args.steps
      if args.quick:
        config.num_steps, config.model.stages, config.model.stage_hidden = 3, (1, 1, 1), (4, 4, 8)
        config.eval_batch_size = 100
      workdir = os.path.join(tmp, "iresnet" if coeff else "resnet")
      os.makedirs(workdir)
      start = time.perf_counter()
      results = train_and_evaluate(config, workdir)
      results["seconds"] = time.perf_counter() - start
      results["num_steps"] = config.num_steps
      print(f"{name}: test error {100 * results['test_error']:.2f}% after {config.num_steps} steps, "
            f"certified: {results.get('certified', 'n/a')}, {results['seconds']:.0f} s", flush=True)
      inverses[name] = invert_test_images(workdir, test_images)
      print(f"  inverse of {len(test_images)} test digits from their features: max error "
            f"{inverses[name]['max_abs_error']:.2e}, {inverses[name]['not_converged']} not converged", flush=True)
      runs[name] = {**results, "inverse": {k: v for k, v in inverses[name].items() if k not in ("x", "x_back")}}

  os.makedirs(args.output_dir, exist_ok=True)
  figure(inverses, os.path.join(args.output_dir, "mnist_classification_inverse.png"))
  rows = [f"| model | c | steps | test error % ({test_set}) | certified (max Lip(g) bound) | inverse from features: "
          f"max error, not converged (of {len(test_images)}) | train + eval (s) |", "|---|---:|---:|---:|---|---|---:|"]
  for name, r in runs.items():
    certified = (f"{'yes' if r['certified'] else '**no**'} ({r['max_lipschitz_bound']:.4f})" if "certified" in r
                 else "n/a (no constraint)")
    rows.append(f"| {name} | {'0.9' if name == 'i-ResNet' else '-'} | {r['num_steps']:,} | "
                f"{100 * r['test_error']:.2f} | {certified} | {r['inverse']['max_abs_error']:.1e}, "
                f"{r['inverse']['not_converged']} | {r['seconds']:.0f} |")
  table = "\n".join(rows)
  print(table)
  with open(os.path.join(args.output_dir, "mnist_classification.md"), "w") as f:
    f.write(table + "\n")
  with open(os.path.join(args.output_dir, "mnist_classification.json"), "w") as f:
    json.dump(json_ready(runs), f, indent=1, allow_nan=False)  # a diverged inverse's error: null


if __name__ == "__main__":
  main()
