"""A class-conditional i-ResNet on real MNIST, fitted in one call: ``p(x | digit)`` and samples of any digit.

The distribution layer end to end: ``IResNetFlow(..., context_size=10, prior='conditional')`` with
the one-hot label as the context, wrapped in ``iresflow.FlowDistribution`` and trained by
``iresflow.fit(key, dist, images, context=labels)``. The flow is ``mnist_density.py``'s i-ResNet
(squeeze, 4 blocks, squeeze, 4 blocks, g = 3x3 -> 1x1 -> 3x3 convolutions of ``--hidden`` channels,
c = 0.9, 5-term power series in training); each block adds a learned embedding of the label to the
inputs of its activations, and the base distribution's mean and scale depend on the label.

The training images are dequantised once (one uniform draw per pixel) and logit-transformed
(alpha = 1e-6), as arrays in memory for ``fit``; 5% of them are held out for its validation and
early stopping. After training:

* samples of every digit (``--digits`` picks which) at temperature 1 and 0.7, certified inverse;
* test bits/dim of ``log p(x | true label)`` on ``--n-test`` test images with an unbiased estimator
  (Russian roulette, 20 exact terms);
* the flow as a generative classifier, ``argmax_y log p(x | y)`` over the 10 digits, on the same images
  (a check that the density depends on the label, not a competitive classifier);
* the certificate of every block.

    python -m iresflow.data.prepare mnist --data-dir ~/tensorflow_datasets            # once (~30 s)
    python experiments/conditional_mnist.py --data-dir ~/tensorflow_datasets --docs-dir docs
    python experiments/conditional_mnist.py --data-dir ~/tensorflow_datasets --sample-only --digits 3 7
    python experiments/conditional_mnist.py --quick                # synthetic data, for the test suite

Writes ``conditional_mnist.{json,md}`` and ``conditional_mnist_samples.png`` into ``--output-dir``
(default ``workdirs/conditional_mnist``; ``--docs-dir docs`` for the committed results), and the
trained variables as ``conditional_mnist_variables.msgpack`` (read by ``--sample-only``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from iresflow import FlowDistribution, certify, fit
from iresflow.core import PowerSeries, Roulette
from iresflow.data import inverse_logit_transform, load_image_dataset
from iresflow.data.transforms import bits_per_dim
from iresflow.models import IResNetFlow
from iresflow.nn import LipschitzConstraint, ResidualSpec
from iresflow.train import plots
from iresflow.train.tasks import DensityPreprocessing

LOGIT_ALPHA = 1e-6
EVAL_ESTIMATOR = Roulette(n_exact_terms=20, precision="highest")


def make_distribution(key, hidden: int, stages, x_init, context_init) -> FlowDistribution:
  model = IResNetFlow(data_shape=(28, 28, 1), stages=stages, prior="conditional", context_size=10,
                      context_encoder=(64,),
                      residual=ResidualSpec(hidden=hidden, constraint=LipschitzConstraint(coeff=0.9)))
  return FlowDistribution.create(key, model, x_init=x_init, context_init=context_init,
                                 estimator=PowerSeries(n_terms=5))


def synthetic_data(n_train: int, n_test: int):
  """Random images and labels of MNIST's shapes, for the smoke test (not MNIST)."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (n_train + n_test, 28, 28, 1), dtype=np.uint8)
  labels = rng.integers(0, 10, n_train + n_test)
  return "synthetic", images[:n_train], labels[:n_train], images[n_train:], labels[n_train:]


def one_hot(labels) -> np.ndarray:
  return np.eye(10, dtype=np.float32)[np.asarray(labels)]


def preprocess(images, seed: int):
  """Dequantised, logit-transformed images and the transform's log-det per image."""
  x, log_det = DensityPreprocessing(num_levels=256, logit_alpha=LOGIT_ALPHA)(jax.random.key(seed), jnp.asarray(images))
  return np.asarray(x), np.asarray(log_det)


def sample_grid(dist: FlowDistribution, digits, n_per_digit: int, temperature: float, key) -> np.ndarray:
  """Samples ``(len(digits) * n_per_digit, 28, 28, 1)`` in [0, 1], a row per digit; whether every inverse converged."""
  samples, info = dist.sample(key, n_per_digit, context=one_hot(digits), temperature=temperature, report=True)
  samples = jnp.swapaxes(samples, 0, 1).reshape(-1, 28, 28, 1)  # (digit, sample) order
  return np.clip(np.asarray(inverse_logit_transform(samples, LOGIT_ALPHA)), 0, 1), bool(jnp.all(info.converged))


def evaluate(dist: FlowDistribution, images, labels, batch: int, key) -> dict:
  """Test bits/dim given the true label (unbiased roulette) and the generative classifier's accuracy."""
  evaluator = dist.replace(estimator=EVAL_ESTIMATOR)
  all_digits = one_hot(np.arange(10))

  @jax.jit
  def log_probs(x, key):
    # log p(x | y) for every digit y: (batch, 10); the same probes for all ten, so ranks compare like with like.
    return jax.vmap(lambda c: evaluator.log_prob(x, key=key, context=c), out_axes=1)(all_digits)

  bits, correct = [], []
  for start in tqdm(range(0, len(images), batch), desc="test bits/dim, 10 labels per image", dynamic_ncols=True):
    x, log_det = preprocess(images[start:start + batch], seed=10_000 + start)
    values = np.asarray(log_probs(jnp.asarray(x), jax.random.fold_in(key, start))) + log_det[:, None]
    y = np.asarray(labels[start:start + batch])
    bits.append(np.asarray(bits_per_dim(jnp.asarray(values[np.arange(len(y)), y]), 784, 256)))
    correct.append(np.argmax(values, axis=1) == y)
  bits, correct = np.concatenate(bits), np.concatenate(correct)
  return {"test_bits_per_dim": float(bits.mean()),
          "test_bits_per_dim_se": float(bits.std(ddof=1) / math.sqrt(len(bits))),
          "generative_classifier_accuracy": float(correct.mean()), "n_test": int(len(bits))}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data-dir", default=None, help="TFDS data_dir holding the prepared mnist")
  parser.add_argument("--output-dir", "--docs-dir", dest="output_dir",
                      default=os.path.join("workdirs", "conditional_mnist"),
                      help="results folder (--docs-dir docs: the committed results)")
  parser.add_argument("--steps", type=int, default=2400, help="training steps (batch 64)")
  parser.add_argument("--hidden", type=int, default=32)
  parser.add_argument("--n-test", type=int, default=2000, help="test images for bits/dim and the classifier")
  parser.add_argument("--digits", type=int, nargs="+", default=list(range(10)), help="digits to sample")
  parser.add_argument("--sample-only", action="store_true", help="load the trained variables and sample --digits")
  parser.add_argument("--quick", action="store_true", help="synthetic data, tiny model, a few steps")
  args = parser.parse_args()
  if any(not 0 <= d <= 9 for d in args.digits):
    parser.error(f"--digits: expected digits 0-9, got {args.digits}")
  os.makedirs(args.output_dir, exist_ok=True)
  variables_path = os.path.join(args.output_dir, "conditional_mnist_variables.msgpack")
  stages, hidden, steps, n_test = ((1, 1), 4, 3, 20) if args.quick else ((4, 4), args.hidden, args.steps, args.n_test)
  if args.quick:
    name, train_images, train_labels, test_images, test_labels = synthetic_data(256, n_test)
  else:
    data = load_image_dataset("mnist", data_dir=args.data_dir)
    name, train_images, train_labels = data.name, data.train_images, data.train_labels
    test_images, test_labels = data.test_images[:n_test], data.test_labels[:n_test]

  x_init, _ = preprocess(train_images[:256], seed=1)
  dist = make_distribution(jax.random.key(0), hidden, stages, x_init, one_hot(train_labels[:256]))
  if args.sample_only:
    if not os.path.exists(variables_path):
      parser.error(f"--sample-only: no trained variables at {variables_path}; train first (without --sample-only)")
    with open(variables_path, "rb") as f:
      dist = dist.replace(variables=flax.serialization.from_bytes(dist.variables, f.read()))
    grid, converged = sample_grid(dist, args.digits, 10, 0.7, jax.random.key(7))
    path = os.path.join(args.output_dir, f"conditional_mnist_digits_{''.join(map(str, args.digits))}.png")
    plots.image_grid(grid, path, f"digits {args.digits}, temperature 0.7", columns=10)
    print(f"wrote {path} (inverse converged: {converged})")
    return

  print(f"preprocessing {len(train_images):,} training images", flush=True)
  x_train, _ = preprocess(train_images, seed=2)
  n_params = sum(a.size for a in jax.tree.leaves(dist.variables["params"]))
  print(f"fitting a class-conditional i-ResNet ({n_params:,} parameters) for {steps} steps", flush=True)
  start = time.perf_counter()
  dist, losses = fit(jax.random.key(1), dist, x_train, context=one_hot(train_labels), batch_size=64,
                     max_steps=steps, max_epochs=1000, val_fraction=0.05, patience=1000,
                     optimizer=optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3)))
  train_seconds = time.perf_counter() - start
  with open(variables_path, "wb") as f:
    f.write(flax.serialization.to_bytes(dist.variables))

  print("certifying every block", flush=True)
  certificate = certify(dist.model, dist.variables)
  print("sampling every digit", flush=True)
  grid_1, converged_1 = sample_grid(dist, range(10), 10, 1.0, jax.random.key(3))
  grid_07, converged_07 = sample_grid(dist, range(10), 10, 0.7, jax.random.key(4))
  results = {"dataset": name, "n_train": int(len(train_images)), "parameters": int(n_params), "steps": steps,
             "train_seconds": train_seconds, "losses_nats": losses, "stages": list(stages), "hidden": hidden,
             "certified": certificate.certified, "max_lipschitz_bound": certificate.max_lipschitz_bound,
             "samples_inverse_converged": converged_1 and converged_07,
             **evaluate(dist, test_images, test_labels, 100 if not args.quick else 10, jax.random.key(5)),
             "command": "python experiments/conditional_mnist.py --data-dir ~/tensorflow_datasets --docs-dir docs"}
  plots.image_grid(np.concatenate([grid_1, grid_07]), os.path.join(args.output_dir, "conditional_mnist_samples.png"),
                   "rows: digits 0-9 at temperature 1, then 0-9 at temperature 0.7", columns=10)
  with open(os.path.join(args.output_dir, "conditional_mnist.json"), "w") as f:
    json.dump(results, f, indent=1)
  synthetic = "synthetic " if name == "synthetic" else ""
  table = "\n".join([
      f"| parameters | steps | train time | test bits/dim given the label "
      f"({results['n_test']:,} {synthetic}test images) | generative-classifier accuracy | certified |",
      "|---:|---:|---:|---:|---:|---|",
      f"| {n_params:,} | {steps:,} | {train_seconds / 60:.1f} min | {results['test_bits_per_dim']:.3f} ± "
      f"{results['test_bits_per_dim_se']:.3f} | {results['generative_classifier_accuracy']:.3f} | "
      f"{'yes' if certificate.certified else 'NO'} (max Lip(g) bound {certificate.max_lipschitz_bound:.4f}) |"])
  print(table)
  with open(os.path.join(args.output_dir, "conditional_mnist.md"), "w") as f:
    f.write(table + "\n")


if __name__ == "__main__":
  main()
