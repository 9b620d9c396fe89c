"""The i-ResNet family side by side: i-ResNet, Residual Flow, i-DenseNet, Monotone Flow and a Glow-style baseline.

On 2-D toy densities and on scikit-learn's 8x8 digits, every model gets the same training wall-clock
(after compilation; :func:`iresflow.train.fitting.fit_for_seconds`), the same data order, batch size,
optimizer and learning rate, and about the same number of parameters (each model's width is chosen to
match the i-ResNet's count). The members differ as their papers say:

* i-ResNet (Behrmann et al. 2019): ``g`` a chain with ELU, c = 0.9, 5-term power series.
* Residual Flow (Chen et al. 2019): LipSwish, c = 0.98, Russian-roulette log-det, Neumann gradient.
* i-DenseNet (Perugachi-Diaz et al. 2021): the Residual Flow with a Lipschitz DenseNet ``g`` (CLipSwish,
  learnable concatenation weights).
* Monotone Flow (Ahn et al. 2022): the i-DenseNet's ``g`` with their CPila activation in the
  Cayley-transform block (``block_type='monotone'``).
* Glow-style: ActNorm, learned mixing and affine coupling (``iresflow.baselines``).

On real MNIST (``--datasets mnist --data-dir DIR``; prepared with ``python -m iresflow.data.prepare``) the
layout and preprocessing are those of experiments/mnist_density.py (256 levels, logit transform), the
test set a fixed subset of 1,000 test images and the flows' test log-dets the unbiased Russian-roulette
series with 20 exact terms. Elsewhere test log-likelihoods use exact log-determinants (2x2 or 64x64
Jacobians). As the trainer does, the flows are evaluated and certified (``iresflow.certify``) after 10
more norm-estimator steps for their final parameters (``iresflow.train.workdir.evaluation_variables``).
Writes a table, a JSON file and a figure of the toy densities.

    python experiments/family.py --docs-dir docs                # docs/family.{md,json,png}, ~47 min
    python experiments/family.py --datasets mnist --data-dir DIR --docs-dir docs  # adds MNIST, ~42 min
    python experiments/family.py --quick    # tiny, every member, ~3 min on 2 CPU cores (the test runs one: ~20 s)

Results of data sets not in ``--datasets``, and of members not in ``--members``, are kept from the JSON
file already in ``--output-dir`` (``--docs-dir``) (so one member can be rerun alone: the budgets are wall-clock).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import iresflow  # noqa: E402
from iresflow.baselines import GlowFlow, GlowImageFlow, matching_width, parameter_count  # noqa: E402
from iresflow.core import jit_run_once  # noqa: E402
from iresflow.data import IMAGE_DATASETS, BatchSampler, load_image_dataset, sample_toy  # noqa: E402
from iresflow.models import IResNetFlow  # noqa: E402
from iresflow.nn import (ExactLogDet, FixedPointSolver, LipschitzConstraint, PowerSeries, ResidualSpec,  # noqa: E402
                         Roulette)
from iresflow.train import create_optimizer  # noqa: E402
from iresflow.train.fitting import fit_for_seconds  # noqa: E402
from iresflow.train.tasks import DensityPreprocessing  # noqa: E402
from tqdm import tqdm  # noqa: E402
from iresflow.train.workdir import evaluation_variables  # noqa: E402
from mnist_density import LOGIT_ALPHA, synthetic_mnist  # noqa: E402  (experiments/, the script's folder)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEMBERS = ("i-ResNet", "Residual Flow", "i-DenseNet", "Monotone Flow", "Glow")
LIMIT = 4.0
FORWARD_SOLVER = FixedPointSolver(atol=1e-5, rtol=1e-5, max_iters=1000)
N_MNIST_TEST = 1000  # fixed test subset: 4 flows x 10,000 images by the 20-term roulette would take ~30 min
MNIST_EVAL_ESTIMATOR = Roulette(n_exact_terms=20, precision="highest")  # unbiased; exact log-dets: too costly
EVAL_BATCH_MNIST = 100


@dataclasses.dataclass(frozen=True)
class Member:
  """How one family member is built from a width: its ``g`` and block, and its training estimator."""

  activation: str
  coeff: float
  architecture: str = "chain"
  block_type: str = "iresnet"
  roulette: bool = True

  def spec(self, width: int, image: bool) -> ResidualSpec:
    layers = dict(kernel_sizes=(3, 3, 3, 1)) if self.architecture == "densenet" else {}
    if not image:
      layers = dict(dense_layers=4 if self.architecture == "densenet" else 3)
    return ResidualSpec(hidden=width, activation=self.activation, architecture=self.architecture,
                        constraint=LipschitzConstraint(self.coeff), **layers)

  def estimator(self):
    return Roulette() if self.roulette else PowerSeries(n_terms=5)


FLOWS = {
    "i-ResNet": Member("elu", 0.9, roulette=False),
    "Residual Flow": Member("lipswish", 0.98),
    "i-DenseNet": Member("clipswish", 0.98, architecture="densenet"),
    "Monotone Flow": Member("cpila", 0.98, architecture="densenet", block_type="monotone"),
}


def make_flow(member: Member, width: int, data_shape, n_blocks: int, stages) -> IResNetFlow:
  image = len(data_shape) == 3
  spec = member.spec(width, image)
  # Monotone blocks solve a fixed point in the forward pass too: to 1e-5, as experiments/configs/monotone_*.py.
  monotone = member.block_type == "monotone"
  blocks = dict(block_type=member.block_type, forward_solver=FORWARD_SOLVER if monotone else None)
  if image:
    return IResNetFlow(data_shape=data_shape, stages=stages, residual=spec, **blocks)
  return IResNetFlow(data_shape=data_shape, stages=(), fc_blocks=n_blocks, fc_residual=spec, **blocks)


def flow_width(member: Member, n_params: int, x, data_shape, n_blocks, stages) -> int:
  """The width whose flow has the parameter count closest to ``n_params`` (bisection, shapes only)."""
  return matching_width(lambda h: _InitWithEstimator(make_flow(member, h, data_shape, n_blocks, stages)), n_params,
                        x, low=1, high=1024)


class _InitWithEstimator:
  """Adapts a flow to ``matching_width``, which calls ``module.init(key, x)``."""

  def __init__(self, flow):
    self.flow = flow

  def init(self, key, x):
    return self.flow.init(key, x, estimator=PowerSeries(n_terms=1))


def train_for(variables, log_prob_fn, batch_at, seconds: float, steps_per_check: int, learning_rate: float,
              desc: str | None = None):
  """Adam (warm-up 100 steps, clipping 1.0) on ``-mean log p`` for ``seconds`` of training."""
  optimizer = create_optimizer("adam", learning_rate, num_steps=10**6, warmup_steps=100, grad_clip=1.0)

  def loss_fn(variables, x, key):
    log_prob, updated = log_prob_fn(variables, x, key)
    return -jnp.mean(log_prob), updated

  return fit_for_seconds(variables, loss_fn, optimizer, batch_at, seconds, jax.random.key(0), steps_per_check,
                         desc=desc)


@dataclasses.dataclass
class DataSetup:
  """One dataset of the comparison: its layout, batches, preprocessing and test set.

  ``continuous(key, batch) -> (x, log-det of the preprocessing)``; ``eval_estimator`` is the flows' test
  log-det (None: exact).
  """

  data_shape: tuple
  batch_at: object
  continuous: object
  test: np.ndarray
  x_init: jax.Array
  stages: tuple = ()
  n_blocks: int = 0
  eval_estimator: object = None
  eval_batch: int = 2000
  preprocessing: DensityPreprocessing | None = None

  @property
  def image(self) -> bool:
    return len(self.data_shape) == 3


def image_setup(name: str, quick: bool, data_dir: str | None) -> DataSetup:
  """Digits (17 levels, ``x - 0.5``, exact test log-dets) or MNIST (256 levels, logit transform as in
  experiments/mnist_density.py, test log-dets by the unbiased 20-exact-term roulette on 1,000 fixed test images)."""
  mnist = name == "mnist"
  if mnist and quick:
    data = synthetic_mnist(256, 20)
  else:
    data = load_image_dataset(name, data_dir=data_dir)
  preprocessing = DensityPreprocessing(data.num_levels, logit_alpha=LOGIT_ALPHA if mnist else None)
  sampler = BatchSampler(len(data.train_images), 64, 0)
  test = data.test_images
  if mnist:  # the fixed subset of mnist_density.py's curve
    test = test[np.random.default_rng(0).permutation(len(test))[:N_MNIST_TEST]]
  return DataSetup(
      data_shape=data.image_shape, batch_at=lambda i: data.train_images[sampler.global_indices(i)],
      continuous=preprocessing, test=test,
      x_init=preprocessing(jax.random.key(0), jnp.asarray(data.train_images[:64]))[0],
      stages=(1, 1) if quick else (4, 4), eval_estimator=MNIST_EVAL_ESTIMATOR if mnist else None,
      eval_batch=EVAL_BATCH_MNIST if mnist else 120, preprocessing=preprocessing)


def toy_setup(name: str, quick: bool) -> DataSetup:
  """A 2-D toy: 200,000 training points in batches of 500, exact test log-dets on 20,000 points."""
  batch = 500
  train_data = sample_toy(name, 200_000, 1)
  n_batches = len(train_data) // batch

  def batch_at(i):
    return train_data[(i % n_batches) * batch:(i % n_batches + 1) * batch]

  def continuous(key, x):
    return x, jnp.zeros(x.shape[0])
  return DataSetup(data_shape=(2,), batch_at=batch_at, continuous=continuous,
                   test=sample_toy(name, 2000 if quick else 20_000, 12345), x_init=jnp.asarray(batch_at(0)),
                   n_blocks=2 if quick else 10)


def run_dataset(name: str, seconds: float, quick: bool, members=MEMBERS, data_dir: str | None = None
                ) -> tuple[dict, dict]:
  """Trains the five models on one dataset; returns ``(results per model, log-densities on a grid for toys)``."""
  setup = image_setup(name, quick, data_dir) if name in IMAGE_DATASETS else toy_setup(name, quick)
  image, data_shape, stages, n_blocks, x_init = (setup.image, setup.data_shape, setup.stages, setup.n_blocks,
                                                  setup.x_init)
  dim = math.prod(data_shape)
  base_width = 8 if quick else 32
  steps_per_check = 5 if quick else 25
  learning_rate = 2e-3

  reference = make_flow(FLOWS["i-ResNet"], base_width, data_shape, n_blocks, stages)
  n_params = parameter_count(jax.eval_shape(lambda: reference.init(jax.random.key(0), x_init,
                                                                     estimator=PowerSeries()))["params"])
  results, densities = {}, {}
  grid = np.linspace(-LIMIT, LIMIT, 100 if not quick else 20, dtype=np.float32)
  points = jnp.asarray(np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 2))
  for member_name in members:
    if member_name == "Glow":
      make = (lambda h: GlowImageFlow(stages, h)) if image else (lambda h: GlowFlow(n_blocks, h))
      width = matching_width(make, n_params, x_init)
      model = make(width)
      variables = jit_run_once(model.init)(jax.random.key(0), x_init)
      certified = None

      def log_prob(variables, x, key, model=model):
        return model.apply(variables, x), {}
      test_log_prob = jax.jit(lambda variables, x, key, model=model: model.apply(variables, x))
    else:
      member = FLOWS[member_name]
      width = base_width if member_name == "i-ResNet" else flow_width(member, n_params, x_init, data_shape,
                                                                      n_blocks, stages)
      model = make_flow(member, width, data_shape, n_blocks, stages)
      estimator = member.estimator()
      # Jitted: one program, where an eager init dispatches every operation outside the scans separately.
      variables = jit_run_once(lambda key, x: model.init(key, x, estimator=estimator))(jax.random.key(0), x_init)

      def log_prob(variables, x, key, model=model, estimator=estimator):
        return model.apply(variables, x, estimator=estimator, rngs={"logdet": key}, mutable=["spectral"])
      test_estimator = setup.eval_estimator or ExactLogDet()
      test_log_prob = jax.jit(lambda variables, x, key, model=model, e=test_estimator:
                              model.apply(variables, x, estimator=e, rngs={} if key is None else {"logdet": key}))

    def train_log_prob(variables, x, key, log_prob=log_prob):
      data_key, model_key = jax.random.split(key)
      x, pre_logdet = setup.continuous(data_key, x)
      value, updated = log_prob(variables, x, model_key)
      return value + pre_logdet, updated

    variables, steps, warmup = train_for(variables, train_log_prob, setup.batch_at, seconds, steps_per_check,
                                         learning_rate, desc=f"{name}, {member_name}: train")
    if member_name != "Glow":  # the trainer's protocol: 10 norm-estimator steps for the final parameters
      variables = evaluation_variables(model, variables["params"], variables["spectral"], 10)
    # Test: nats per example for toys; bits/dim in the data's own level space for images. The same
    # dequantisation draws and estimator keys for every model.
    values = []
    for lo in tqdm(range(0, len(setup.test), setup.eval_batch), desc=f"{name}, {member_name}: test set",
                   unit="batch", dynamic_ncols=True, mininterval=1.0):
      x, pre_logdet = setup.continuous(jax.random.key(10_000 + lo), jnp.asarray(setup.test[lo:lo + setup.eval_batch]))
      values.append(test_log_prob(variables, x, jax.random.key(20_000 + lo)) + pre_logdet)
    log_likelihood = jnp.concatenate(values)
    if image:
      score = float(jnp.mean(setup.preprocessing.loss_per_example(log_likelihood, dim)))
    else:
      score = float(jnp.mean(log_likelihood))
      densities[member_name] = np.exp(np.asarray(test_log_prob(variables, points, None))).reshape(len(grid),
                                                                                                  len(grid))
    max_bound = None
    if member_name != "Glow":
      print(f"{name}, {member_name}: certifying every block...", flush=True)
      certificate = iresflow.certify(model, variables)
      certified, max_bound = certificate.certified, certificate.max_lipschitz_bound
    results[member_name] = {
        "parameters": parameter_count(variables["params"]), "width": width, "steps": steps,
        "train_seconds": seconds, "first_steps_seconds": warmup, "certified": certified,
        "max_lipschitz_bound": max_bound, "n_test": len(setup.test),
        ("test_bits_per_dim" if image else "test_log_likelihood"): score,
        "standard_error": float(jnp.std(log_likelihood) / math.sqrt(log_likelihood.size)
                                / (dim * math.log(2) if image else 1.0))}
    print(name, member_name, {k: round(v, 4) if isinstance(v, float) else v for k, v in results[member_name].items()},
          flush=True)
  return results, densities


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny sizes and budgets (synthetic images for mnist)")
  parser.add_argument("--output-dir", "--docs-dir", dest="output_dir", default=os.path.join("workdirs", "family"),
                      help="results folder (--docs-dir docs: the committed results)")
  parser.add_argument("--toy-seconds", type=float, default=None, help="training seconds per model on a toy (45)")
  parser.add_argument("--digits-seconds", type=float, default=None, help="training seconds per model on digits (180)")
  parser.add_argument("--mnist-seconds", type=float, default=None, help="training seconds per model on MNIST (240)")
  parser.add_argument("--data-dir", default=None, help="TFDS data_dir holding the prepared mnist")
  parser.add_argument("--datasets", default=None,
                      help="comma-separated subset of checkerboard,2spirals,digits,mnist (default: all but mnist)")
  parser.add_argument("--members", default=",".join(MEMBERS), help=f"comma-separated subset of {','.join(MEMBERS)}")
  args = parser.parse_args()
  members = tuple(m for m in MEMBERS if m in args.members.split(","))
  if not members or set(args.members.split(",")) - set(MEMBERS):
    parser.error(f"--members: expected names from {MEMBERS}, got {args.members!r}")
  datasets = (args.datasets or ("checkerboard,digits" if args.quick else "checkerboard,2spirals,digits")).split(",")
  known = ("checkerboard", "2spirals", "digits", "mnist")
  if set(datasets) - set(known):
    parser.error(f"--datasets: expected names from {known}, got {args.datasets!r}")
  toys = tuple(d for d in datasets if d not in IMAGE_DATASETS)
  seconds = {"digits": args.digits_seconds or (2.0 if args.quick else 180.0),
             "mnist": args.mnist_seconds or (2.0 if args.quick else 240.0)}
  toy_seconds = args.toy_seconds or (2.0 if args.quick else 45.0)

  # Results of data sets not run now are kept from an earlier run in the same folder.
  os.makedirs(args.output_dir, exist_ok=True)
  json_path = os.path.join(args.output_dir, "family.json")
  results = {}
  if os.path.exists(json_path):
    with open(json_path) as f:
      results = json.load(f)
  densities = {}
  for name in datasets:
    new, densities[name] = run_dataset(name, seconds.get(name, toy_seconds), args.quick, members, args.data_dir)
    merged = {**results.get(name, {}), **new}
    results[name] = {member: merged[member] for member in MEMBERS if member in merged}
    with open(json_path, "w") as f:
      json.dump(results, f, indent=1)
  figure = os.path.join(args.output_dir, "family.png")
  if toys and (set(members) == set(MEMBERS) or not os.path.exists(figure)):  # a rerun of some members keeps it
    density_figure(toys, members, densities, results, toy_seconds, figure)

  lines = ["| data | model | parameters | steps in the budget | test score (± s.e.) | certified |",
           "|---|---|---:|---:|---:|---|"]
  for dataset in sorted(results, key=lambda name: known.index(name) if name in known else len(known)):
    by_member = results[dataset]
    image = dataset in IMAGE_DATASETS
    key = "test_bits_per_dim" if image else "test_log_likelihood"
    best = (min if image else max)(r[key] for r in by_member.values())
    for member_name, r in by_member.items():
      score = f"{r[key]:.3f} ± {r['standard_error']:.3f}"
      score = f"**{score}**" if r[key] == best else score
      unit = "bits/dim" if image else "nats"
      certified = "n/a" if r["certified"] is None else ("yes" if r["certified"] else "**no**")
      lines.append(f"| {dataset} ({unit}, {r['train_seconds']:.0f} s) | {member_name} | {r['parameters']:,} | "
                   f"{r['steps']:,} | {score} | {certified} |")
  table = "\n".join(lines)
  print(table)
  with open(os.path.join(args.output_dir, "family.md"), "w") as f:
    f.write(table + "\n")


def density_figure(toys, members, densities, results, toy_seconds, path) -> None:
  """Data histogram and each model's density on every toy, titled with the test log-likelihood."""
  fig, axes = plt.subplots(len(toys), len(members) + 1, figsize=(2.2 * (len(members) + 1), 2.3 * len(toys)),
                           squeeze=False)
  for row, toy in enumerate(toys):
    data = sample_toy(toy, 20_000, 7)
    axes[row, 0].hist2d(data[:, 0], data[:, 1], bins=100, range=[[-LIMIT, LIMIT]] * 2, cmap="magma")
    axes[row, 0].set_ylabel(toy)
    axes[row, 0].set_title("data", fontsize=8)
    for col, member_name in enumerate(members, start=1):
      axes[row, col].imshow(densities[toy][member_name], origin="lower", extent=(-LIMIT, LIMIT) * 2, cmap="magma")
      r = results[toy][member_name]
      axes[row, col].set_title(f"{member_name}: {r['test_log_likelihood']:.3f}", fontsize=8)
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle(f"Densities after {toy_seconds:.0f} s of training each, ~equal parameters "
               "(test log-likelihood in nats, higher is better)", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


if __name__ == "__main__":
  main()
