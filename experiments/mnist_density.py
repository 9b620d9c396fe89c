"""Density on real MNIST at CPU scale: i-ResNet flow vs a Glow-style flow vs normflows' Residual flow.

Three flows with the same layout and about the same number of parameters, each trained for the same
wall-clock budget on the 60,000 training images and evaluated by the paper's protocol:

* i-ResNet (iresflow): squeeze to 14x14x4, 4 blocks, squeeze to 7x7x16, 4 blocks; each block ActNorm ->
  ``x + g(x)``, g = 3x3 -> 1x1 -> 3x3 convolutions with ``hidden`` channels, LipSwish before each
  (pre-activation), spectral normalisation to c = 0.9. Trained with the 5-term power series and one
  Gaussian probe (backprop through the series); blocks and terms unrolled (the default on a CPU).
* Glow-style (``iresflow.baselines.GlowImageFlow``): the same squeezes and stages, each step ActNorm ->
  invertible 1x1 mixing -> affine coupling; coupling width chosen to match the i-ResNet's parameters.
* normflows 1.7.3 (PyTorch): the i-ResNet's architecture from its parts (``Squeeze``, ``ActNorm``,
  ``Residual`` of ``LipschitzCNN([c, h, h, c], [3, 1, 3])``, which is LipSwish pre-activation too, at
  c = 0.9), trained with the same 5-term series and backprop, ``nf.utils.update_lipschitz`` after
  every step as its examples do. Skipped, with a note, when torch or normflows are not installed.

All three: uniform dequantisation and the logit transform (alpha = 1e-6, the paper's), its Jacobian
counted; Adam at 1e-3 with 100 warm-up steps, gradients clipped at norm 1 (the same on both frameworks);
batch 64; the same batches in the same order. The budget counts training steps only (compilation
included), not the evaluations, which pause the clock. Test bits/dim: all 10,000 test images in
256-level space, one dequantisation draw per image (the same for all models), log-dets by an unbiased
estimator: for both residual flows the Russian-roulette series with 20 exact terms and a geometric(0.5)
tail (Residual Flows' evaluation setting; normflows' own evaluation mode), Glow's exact log-det; the
standard error is that of the mean over images. The i-ResNet's estimator is checked against the exact
log-det (``jax.jacfwd`` + ``slogdet`` per block) on 100 test images, next to the training-time roulette
(2 exact terms), whose weights ``2^k`` on terms that shrink like ``Lip^k`` give it a heavy tail.

    python -m iresflow.data.prepare mnist --data-dir ~/tensorflow_datasets        # once (~30 s)
    python experiments/mnist_density.py --data-dir ~/tensorflow_datasets --docs-dir docs  # 3 x 20 min + evals
    python experiments/mnist_density.py --quick               # synthetic data, ~30 s on 2 CPU cores
    python experiments/mnist_density.py --flops --data-dir ~/tensorflow_datasets  # FLOPs per training step

Writes ``mnist_density.json``, ``mnist_density.md``, ``mnist_density_curve.png`` and one sample grid
per model into ``--output-dir`` (default ``workdirs/mnist_density``; ``--docs-dir docs`` for the committed results).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from iresflow import certify
from iresflow.baselines import GlowImageFlow, matching_width, parameter_count
from iresflow.data import BatchSampler, ImageDataset, inverse_logit_transform, load_image_dataset
from iresflow.models import IResNetFlow
from iresflow.nn import ExactLogDet, FixedPointSolver, INVERSE_INFO, LipschitzConstraint, PowerSeries, ResidualSpec
from iresflow.nn import Roulette, inverse_info
from iresflow.train import create_optimizer, plots
from iresflow.train.tasks import DensityPreprocessing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOGIT_ALPHA = 1e-6
COEFF = 0.9
N_TERMS = 5
LEARNING_RATE, WARMUP_STEPS, GRAD_CLIP = 1e-3, 100, 1.0
NORMFLOWS_POWER_ITERATIONS = 5
EVAL_ROULETTE = Roulette(n_exact_terms=20, precision="highest")  # unbiased; its random tail starts where terms are tiny
EVAL_BATCH = 100


def synthetic_mnist(n_train: int, n_test: int, seed: int = 0) -> ImageDataset:
  """Random 28x28 images with a blob of structure, for the script's smoke test (not MNIST)."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n_train + n_test, 28, 28, 1), dtype=np.uint8)
  labels = rng.integers(0, 10, n_train + n_test).astype(np.int32)
  return ImageDataset("synthetic", images[:n_train], labels[:n_train], images[n_train:], labels[n_train:],
                      num_levels=256, num_classes=10)


# ------------------------------------------------------------------------------------------ JAX sides
class JaxSide:
  """A Flax flow trained with optax: ``log_prob_fn(variables, x, key) -> (log p, updated collections)``."""

  def __init__(self, name, variables, log_prob_fn, eval_log_prob_fn, sample_fn, preprocessing):
    self.name, self.variables, self.sample_fn = name, variables, sample_fn
    self.preprocessing = preprocessing
    self.n_params = parameter_count(variables["params"])
    optimizer = create_optimizer("adam", LEARNING_RATE, num_steps=10**9, warmup_steps=WARMUP_STEPS,
                                 grad_clip=GRAD_CLIP)
    self.opt_state = optimizer.init(variables["params"])
    dim = 28 * 28

    @jax.jit
    def step(variables, opt_state, images, key):
      data_key, model_key = jax.random.split(key)
      x, pre_logdet = preprocessing(data_key, images)

      def loss_fn(params):
        log_prob, updated = log_prob_fn({**variables, "params": params}, x, model_key)
        return jnp.mean(preprocessing.loss_per_example(log_prob + pre_logdet, dim)), updated

      (loss, updated), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
      updates, opt_state = optimizer.update(grads, opt_state, variables["params"])
      return {**variables, **updated, "params": optax.apply_updates(variables["params"], updates)}, opt_state, loss

    @jax.jit
    def bits_per_dim(variables, x, pre_logdet, key):
      return preprocessing.loss_per_example(eval_log_prob_fn(variables, x, key) + pre_logdet, dim)

    self._step, self._bits_per_dim = step, bits_per_dim

  def step_flops(self, images: np.ndarray) -> float:
    """FLOPs of one training step, from XLA's cost analysis of the compiled step."""
    compiled = self._step.lower(self.variables, self.opt_state, jnp.asarray(images), jax.random.key(0)).compile()
    analysis = compiled.cost_analysis()
    return float((analysis[0] if isinstance(analysis, list) else analysis)["flops"])

  def step(self, images: np.ndarray, key: jax.Array) -> float:
    self.variables, self.opt_state, loss = self._step(self.variables, self.opt_state, jnp.asarray(images), key)
    return float(loss)  # waits for the step: the clock measures finished work

  def bits_per_dim(self, x: np.ndarray, pre_logdet: np.ndarray, key: jax.Array) -> np.ndarray:
    return np.asarray(self._bits_per_dim(self.variables, jnp.asarray(x), jnp.asarray(pre_logdet), key))

  def samples(self, z: np.ndarray) -> np.ndarray:
    """Images in [0, 1] from latents ``z`` (n, 784)."""
    return np.asarray(inverse_logit_transform(self.sample_fn(self.variables, jnp.asarray(z)), LOGIT_ALPHA))


def iresnet_side(stages, hidden, x_init, preprocessing) -> JaxSide:
  residual = ResidualSpec(hidden=hidden, constraint=LipschitzConstraint(coeff=COEFF))
  model = IResNetFlow(data_shape=(28, 28, 1), stages=stages, residual=residual)
  series = PowerSeries(n_terms=N_TERMS)
  variables = model.init(jax.random.key(0), x_init, estimator=series)

  def train_log_prob(v, x, key):
    return model.apply(v, x, estimator=series, rngs={"logdet": key}, mutable=["spectral"])

  def eval_log_prob(v, x, key):
    return model.apply(v, x, estimator=EVAL_ROULETTE, rngs={"logdet": key})

  def sample(v, z):
    x, state = model.apply(v, z, solver=FixedPointSolver(), method=model.inverse, mutable=[INVERSE_INFO])
    side.last_inverse_info = inverse_info(state)
    return x

  side = JaxSide("i-ResNet (iresflow)", variables, train_log_prob, eval_log_prob, sample, preprocessing)
  side.model = model
  return side


def glow_side(stages, n_params_to_match, x_init, preprocessing) -> JaxSide:
  hidden = matching_width(lambda h: GlowImageFlow(stages, h), n_params_to_match, x_init)
  model = GlowImageFlow(stages, hidden)
  variables = model.init(jax.random.key(0), x_init)
  side = JaxSide(f"Glow-style (coupling width {hidden})", variables,
                 lambda v, x, key: (model.apply(v, x), {}), lambda v, x, key: model.apply(v, x),
                 lambda v, z: model.apply(v, z, (28, 28, 1), method=model.sample), preprocessing)
  side.hidden = hidden
  return side


# -------------------------------------------------------------------------------------- normflows side
class NormflowsSide:
  """The i-ResNet's architecture built from normflows' parts, trained with torch.optim.Adam."""

  name = "Residual flow (normflows)"

  def __init__(self, stages, hidden, x_init: np.ndarray):
    import normflows as nf
    import torch

    self.torch, self.nf = torch, nf
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    data_direction = []  # normflows lists flows in the sampling direction; build the data direction
    channels = 1
    for n_blocks in stages:
      data_direction.append(nf.flows.Squeeze())  # its inverse squeezes (the data direction)
      channels *= 4
      for _ in range(n_blocks):
        net = nf.nets.LipschitzCNN([channels, hidden, hidden, channels], [3, 1, 3], lipschitz_const=COEFF,
                                   max_lipschitz_iter=NORMFLOWS_POWER_ITERATIONS, init_zeros=False)
        data_direction += [nf.flows.ActNorm((channels, 1, 1)),
                           nf.flows.Residual(net, reduce_memory=False, n_power_series=N_TERMS, n_samples=1)]
    size = 28 // 2 ** len(stages)
    base = nf.distributions.DiagGaussian((channels, size, size), trainable=False)
    self.model = nf.NormalizingFlow(base, data_direction[::-1])
    # The first pass initialises ActNorm from data and shapes the power-iteration vectors.
    self.model.forward_kld(self._torch(x_init)).backward()
    self.model.zero_grad()
    nf.utils.update_lipschitz(self.model, 50)
    self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LEARNING_RATE)
    self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda i: min(1.0, (i + 1) / WARMUP_STEPS))
    # geom_p and lamb of each block are unused by the truncated series.
    self.n_params = sum(p.numel() for name, p in self.model.named_parameters()
                        if not name.endswith(("geom_p", "lamb")))

  def _torch(self, x: np.ndarray):
    return self.torch.as_tensor(np.asarray(x).transpose(0, 3, 1, 2).copy())  # NHWC -> NCHW

  def step(self, x: np.ndarray, pre_logdet: np.ndarray) -> float:
    self.model.train()
    self.optimizer.zero_grad(set_to_none=True)
    log_prob = self.model.log_prob(self._torch(x)) + self.torch.as_tensor(np.array(pre_logdet))
    loss = -(log_prob.mean() / (28 * 28) - math.log(256)) / math.log(2)  # bits/dim, as iresflow's
    loss.backward()
    self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
    self.optimizer.step()
    self.schedule.step()
    self.nf.utils.update_lipschitz(self.model, NORMFLOWS_POWER_ITERATIONS)
    return float(loss.detach())

  def bits_per_dim(self, x: np.ndarray, pre_logdet: np.ndarray, key) -> np.ndarray:
    self.model.eval()  # normflows' evaluation estimator: 20 exact terms + a geometric roulette
    log_prob = self.model.log_prob(self._torch(x)).detach().numpy() + np.asarray(pre_logdet)
    return -(log_prob / (28 * 28) - math.log(256)) / math.log(2)

  def samples(self, z: np.ndarray) -> np.ndarray:
    self.model.eval()
    with self.torch.no_grad():
      x = self.torch.as_tensor(np.asarray(z, np.float32).reshape(len(z), *self.model.q0.shape))
      for flow in self.model.flows:  # the sampling direction: each block's fixed-point inverse
        x, _ = flow(x)
    return np.asarray(inverse_logit_transform(jnp.asarray(x.numpy().transpose(0, 2, 3, 1)), LOGIT_ALPHA))


# ---------------------------------------------------------------------------------------- the protocol
def preprocessed(preprocessing, images: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Dequantised, logit-transformed batch and its log-det: the same draw for every model."""
  x, pre_logdet = preprocessing(jax.random.key(seed), jnp.asarray(images))
  return np.asarray(x), np.asarray(pre_logdet)


def test_bits_per_dim(side, preprocessing, images: np.ndarray) -> np.ndarray:
  """Per-image bits/dim (one dequantisation and one estimator draw per image)."""
  values = []
  for lo in range(0, len(images), EVAL_BATCH):
    x, pre_logdet = preprocessed(preprocessing, images[lo:lo + EVAL_BATCH], seed=10**6 + lo)
    values.append(side.bits_per_dim(x, pre_logdet, jax.random.key(2 * 10**6 + lo)))
  return np.concatenate(values)


def train_for(side, data: ImageDataset, preprocessing, budget_s: float, curve_images: np.ndarray,
              n_curve_points: int, batch_size: int, max_steps: int | None) -> list[dict]:
  """Trains ``side`` for ``budget_s`` seconds of training; returns the curve (bits/dim on ``curve_images``)."""
  sampler = BatchSampler(len(data.train_images), batch_size, seed=0)
  is_jax = isinstance(side, JaxSide)

  def point(step, seconds):
    bpd = float(np.mean(test_bits_per_dim(side, preprocessing, curve_images)))
    print(f"  {side.name}: step {step}, {seconds:.0f} s of training: {bpd:.4f} bits/dim "
          f"({len(curve_images)} test images)", flush=True)
    return {"step": step, "seconds": seconds, "bits_per_dim": bpd}

  curve = [point(0, 0.0)]
  marks = [budget_s * (i + 1) / n_curve_points for i in range(n_curve_points)]
  trained, step = 0.0, 0
  while marks and (max_steps is None or step < max_steps):
    images = data.train_images[sampler.global_indices(step)]
    start = time.perf_counter()
    if is_jax:
      loss = side.step(images, jax.random.key(step))
    else:
      loss = side.step(*preprocessed(preprocessing, images, seed=step))
    trained += time.perf_counter() - start
    step += 1
    if not math.isfinite(loss):
      raise FloatingPointError(f"{side.name}: loss {loss} at step {step}")
    if step % 100 == 0:
      print(f"  {side.name}: step {step}, {trained:.0f}/{budget_s:.0f} s, train loss {loss:.4f}", flush=True)
    if trained >= marks[0] or (max_steps is not None and step >= max_steps):
      marks.pop(0)
      curve.append(point(step, trained))
  return curve


def estimator_check(side: JaxSide, preprocessing, images: np.ndarray, n_draws: int = 4, only_eval: bool = False
                    ) -> dict:
  """Estimates of log p vs the exact log p (jacfwd + slogdet per block) on ``images``, in bits/dim.

  For each estimator: the mean of (estimate - exact) over images (each image averaged over
  ``n_draws`` draws for the random ones) and its standard error. ``only_eval``: the test estimator
  alone (--quick).
  """
  model, variables = side.model, side.variables
  x, _ = preprocessed(preprocessing, images, seed=10**6)
  exact = jax.jit(lambda x: model.apply(variables, x, estimator=ExactLogDet()))
  estimators = {"eval_roulette_20_exact": (EVAL_ROULETTE, n_draws), "roulette_2_exact": (Roulette(), n_draws),
                "series_20": (PowerSeries(n_terms=20), 1)}
  if only_eval:
    estimators = {"eval_roulette_20_exact": estimators["eval_roulette_20_exact"]}
  estimates = {name: jax.jit(lambda x, key, e=estimator: model.apply(variables, x, estimator=e,
                                                                     rngs={"logdet": key}))
               for name, (estimator, _) in estimators.items()}
  errors = {name: [] for name in estimators}
  for lo in range(0, len(x), 10):
    batch = jnp.asarray(x[lo:lo + 10])
    exact_log_prob = np.asarray(exact(batch))
    for name, (_, draws) in estimators.items():
      estimate = estimates[name]
      errors[name].append(np.mean([np.asarray(estimate(batch, jax.random.key(7 * d + lo))) - exact_log_prob
                                   for d in range(draws)], 0))
  nats_per_bit_dim = 28 * 28 * math.log(2)  # bits/dim = -log p / (D log 2) + const: hence the minus below
  check = {"n_images": len(x), "draws_per_image": n_draws}
  for name, values in errors.items():
    values = np.concatenate(values)
    check[f"{name}_minus_exact_bits_per_dim"] = float(-values.mean() / nats_per_bit_dim)
    check[f"{name}_minus_exact_se"] = float(values.std(ddof=1) / math.sqrt(len(values)) / nats_per_bit_dim)
  return check


def curve_figure(curves: dict, path: str) -> None:
  from matplotlib.figure import Figure

  fig = Figure(figsize=(6, 4))
  ax = fig.subplots()
  for name, curve in curves.items():
    ax.plot([p["seconds"] / 60 for p in curve], [p["bits_per_dim"] for p in curve], "o-", label=name)
  ax.set_xlabel("training wall-clock (minutes, 2 CPU cores)")
  ax.set_ylabel("test bits/dim (1,000 fixed test images)")
  ax.set_ylim(top=min(8.0, ax.get_ylim()[1]))
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data-dir", default=None, help="TFDS data_dir holding the prepared mnist")
  parser.add_argument("--output-dir", "--docs-dir", dest="output_dir",
                      default=os.path.join("workdirs", "mnist_density"),
                      help="results folder (--docs-dir docs: the committed results)")
  parser.add_argument("--minutes", type=float, default=20.0, help="training budget per model")
  parser.add_argument("--hidden", type=int, default=32)
  parser.add_argument("--models", nargs="+", default=["iresnet", "glow", "normflows"])
  parser.add_argument("--quick", action="store_true", help="synthetic data, tiny model, a few steps")
  parser.add_argument("--flops", action="store_true",
                      help="only write each JAX model's FLOPs per training step (mnist_density_flops.json)")
  args = parser.parse_args()
  stages, hidden = ((1, 1), 4) if args.quick else ((4, 4), args.hidden)
  if args.quick:
    data = synthetic_mnist(256, 40)
    budget_s, max_steps, n_curve, n_curve_images, n_check = 1e9, 3, 1, 40, 10  # one eval batch shape
  else:
    data = load_image_dataset("mnist", data_dir=args.data_dir)
    budget_s, max_steps, n_curve, n_curve_images, n_check = 60 * args.minutes, None, 6, 1000, 100
  preprocessing = DensityPreprocessing(num_levels=256, logit_alpha=LOGIT_ALPHA)
  x_init, _ = preprocessed(preprocessing, data.train_images[:64], seed=0)
  curve_images = data.test_images[np.random.default_rng(0).permutation(len(data.test_images))[:n_curve_images]]
  z = np.asarray(jax.random.normal(jax.random.key(42), (64, 28 * 28)))

  sides = {"iresnet": iresnet_side(stages, hidden, x_init, preprocessing)}
  if "glow" in args.models:
    sides["glow"] = glow_side(stages, sides["iresnet"].n_params, x_init, preprocessing)
  if "normflows" in args.models:
    try:
      sides["normflows"] = NormflowsSide(stages, hidden, x_init)
    except ImportError as error:
      print(f"normflows side skipped: {error} (pip install 'iresflow[bench]')", flush=True)
  sides = {k: v for k, v in sides.items() if k in args.models}

  os.makedirs(args.output_dir, exist_ok=True)
  if args.flops:  # why the budgets buy different step counts: arithmetic per step of the JAX sides
    flops = {key: side.step_flops(data.train_images[:64]) for key, side in sides.items() if key != "normflows"}
    print({key: f"{value / 1e9:.2f} GFLOP per training step" for key, value in flops.items()}, flush=True)
    with open(os.path.join(args.output_dir, "mnist_density_flops.json"), "w") as f:
      json.dump({"flops_per_training_step": flops, "batch_size": 64, "backend": jax.default_backend()}, f, indent=1)
    return
  results = {"dataset": data.name, "n_train": len(data.train_images), "n_test": len(data.test_images),
             "stages": list(stages), "hidden": hidden, "coeff": COEFF, "budget_seconds": budget_s,
             "batch_size": 64, "logit_alpha": LOGIT_ALPHA, "models": {}}
  for key, side in sides.items():
    print(f"training {side.name} ({side.n_params:,} parameters) for {budget_s:.0f} s", flush=True)
    curve = train_for(side, data, preprocessing, budget_s, curve_images, n_curve, 64, max_steps)
    start = time.perf_counter()
    per_image = test_bits_per_dim(side, preprocessing, data.test_images)
    entry = {"name": side.name, "parameters": side.n_params, "steps": curve[-1]["step"],
             "train_seconds": curve[-1]["seconds"], "curve": curve,
             "test_bits_per_dim": float(per_image.mean()),
             "test_bits_per_dim_se": float(per_image.std(ddof=1) / math.sqrt(len(per_image))),
             "test_seconds": time.perf_counter() - start}
    samples = side.samples(z)
    if key == "iresnet":
      certificate = certify(side.model, side.variables)
      entry["certified"] = bool(certificate.certified)
      entry["max_lipschitz_bound"] = float(certificate.max_lipschitz_bound)
      entry["samples_converged"] = bool(jnp.all(side.last_inverse_info.converged))
      entry["estimator_check"] = estimator_check(side, preprocessing, data.test_images[:n_check],
                                                 only_eval=args.quick)
    if key == "glow":
      entry["coupling_width"] = side.hidden
    print(f"{side.name}: test {entry['test_bits_per_dim']:.4f} ± {entry['test_bits_per_dim_se']:.4f} bits/dim "
          f"after {entry['steps']} steps", flush=True)
    plots.image_grid(samples, os.path.join(args.output_dir, f"mnist_density_{key}.png"),
                     f"{side.name}: samples, test {entry['test_bits_per_dim']:.3f} bits/dim")
    results["models"][key] = entry
    with open(os.path.join(args.output_dir, "mnist_density.json"), "w") as f:
      json.dump(results, f, indent=1)

  curve_figure({e["name"]: e["curve"] for e in results["models"].values()},
               os.path.join(args.output_dir, "mnist_density_curve.png"))
  test_set = f"{results['n_test']:,} {'synthetic ' if data.name == 'synthetic' else ''}test images"
  rows = [f"| model | parameters | steps in the budget | test bits/dim ± s.e. ({test_set}) | certified |",
          "|---|---:|---:|---:|---|"]
  for key, e in results["models"].items():
    certified = (f"yes (max Lip(g) bound {e['max_lipschitz_bound']:.4f})" if e.get("certified") else
                 "**no**" if key == "iresnet" else "n/a (no certificate)" if key == "normflows" else
                 "n/a (coupling)")
    rows.append(f"| {e['name']} | {e['parameters']:,} | {e['steps']:,} | {e['test_bits_per_dim']:.3f} ± "
                f"{e['test_bits_per_dim_se']:.3f} | {certified} |")
  table = "\n".join(rows)
  print(table)
  with open(os.path.join(args.output_dir, "mnist_density.md"), "w") as f:
    f.write(table + "\n")


if __name__ == "__main__":
  main()
