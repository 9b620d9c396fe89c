"""Density on real MNIST at CPU scale: each model at its searched recipe, equal wall-clock.

Four flows, each trained for the same wall-clock budget on the 60,000 training images by the plain optax
loop of ``experiments/mnist_search.py`` and evaluated by the paper's protocol, each with the recipe the
search found best at this budget (``docs/mnist_search.md``):

* i-ResNet, Residual Flow and i-DenseNet (iresflow): the shipped training configs
  ``experiments/configs/mnist_<model>_cpu.py`` (``experiments/train.py`` runs the same configs), read
  back by ``mnist_search.setting_from_config``;
* Glow-style (``iresflow.baselines.GlowImageFlow``): :data:`GLOW_RECIPE`, the search's best Glow-style
  trial (the trainer does not train coupling flows, so its recipe lives here);
* normflows 1.7.3 (PyTorch), the peer, at the one setting of the earlier comparison (the i-ResNet's
  layout from its parts: ``Squeeze``, ``ActNorm``, ``Residual`` of ``LipschitzCNN([c, h, h, c], [3, 1, 3])``
  with h = 32, c = 0.9, the 5-term series with backprop, Adam 1e-3, ``nf.utils.update_lipschitz`` after
  every step as its examples do). Skipped, with a note, when torch or normflows are not installed.

All: uniform dequantisation and the logit transform (alpha = 1e-6, the paper's), its Jacobian counted;
100 warm-up steps, gradients clipped at norm 1; batches drawn in the same order. The budget counts
training steps only (compilation included), not the evaluations, which pause the clock. A residual
flow is evaluated, sampled and certified after 10 more norm-estimator steps on its final parameters, as
the trainer does (the stored estimates are those of the weights before the last update). Test bits/dim:
all 10,000 test images in 256-level space, one dequantisation draw per image (the same for all models),
log-dets by an unbiased estimator: for the residual flows the Russian-roulette series with 20 exact
terms and a geometric(0.5) tail (Residual Flows' evaluation setting; normflows' own evaluation mode),
Glow's exact log-det; the standard error is that of the mean over images. Each iresflow residual flow's
estimator is checked against the exact log-det (``jax.jacfwd`` + ``slogdet`` per block) on 100 test
images, next to the training-time roulette (2 exact terms), whose weights ``2^k`` on terms that shrink
like ``Lip^k`` give it a heavy tail; the table shows the test estimator's error and marks it failing when
it is over 3 standard errors from 0 (the bits/dim next to it is then not trustworthy).

``--models`` reruns the models it names and keeps the other models' results of an earlier run of
this protocol in the same folder (same data and budget). The results of the earlier protocol (every
model at one hand-picked setting) are kept too: when the output
folder holds an ``mnist_density.json`` written by it, the run moves it and its figures to
``mnist_density_one_setting.*`` first, and the table shows them as the "one setting" rows.

    python -m iresflow.data.prepare mnist --data-dir ~/tensorflow_datasets        # once (~30 s)
    python experiments/mnist_density.py --data-dir ~/tensorflow_datasets --docs-dir docs  # 5 x 20 min + evals
    python experiments/mnist_density.py --quick               # synthetic data, ~3 min on 2 CPU cores
    python experiments/mnist_density.py --flops --data-dir ~/tensorflow_datasets  # FLOPs per training step
    python experiments/mnist_density.py --docs-dir docs --table-only  # the table and curve again, from the JSON

Writes ``mnist_density.json``, ``mnist_density.md``, ``mnist_density_curve.png`` and one sample grid
per model into ``--output-dir`` (default ``workdirs/mnist_density``; ``--docs-dir docs`` for the committed results).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np

import mnist_search  # experiments/, the script's folder
from iresflow import certify
from iresflow.baselines import GlowImageFlow, parameter_count
from iresflow.data import BatchSampler, ImageDataset, inverse_logit_transform, load_image_dataset
from iresflow.nn import ExactLogDet, FixedPointSolver, INVERSE_INFO, PowerSeries, Roulette, inverse_info
from iresflow.train import plots
from iresflow.train.config import load_config
from iresflow.train.tasks import DensityPreprocessing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOGIT_ALPHA = mnist_search.LOGIT_ALPHA
WARMUP_STEPS, GRAD_CLIP = mnist_search.WARMUP_STEPS, mnist_search.GRAD_CLIP
EVAL_ROULETTE = mnist_search.EVAL_ROULETTE  # unbiased; its random tail starts where terms are tiny
EVAL_BATCH = 100
EVAL_CHECK_NAME = "eval_roulette_20_exact"  # EVAL_ROULETTE's name in estimator_check's results
RESIDUAL_FLOWS = ("iresnet", "residual_flow", "idensenet")
NAMES = {"iresnet": "i-ResNet", "residual_flow": "Residual Flow", "idensenet": "i-DenseNet", "glow": "Glow-style",
         "normflows": "Residual flow (normflows)"}
# The search's best Glow-style trial (docs/mnist_search.md; a test checks it against mnist_search.json).
GLOW_RECIPE = dataclasses.replace(mnist_search.BASES["glow"], learning_rate=3e-3, schedule="final_decay")
# normflows at the earlier comparison's one setting (the i-ResNet base's layout and optimizer).
NORMFLOWS_STAGES, NORMFLOWS_HIDDEN, NORMFLOWS_COEFF, NORMFLOWS_TERMS = (4, 4), 32, 0.9, 5
NORMFLOWS_LEARNING_RATE, NORMFLOWS_POWER_ITERATIONS = 1e-3, 5


def recipe_path(model: str) -> str:
  """The shipped training config of a residual flow: ``experiments/configs/mnist_<model>_cpu.py``."""
  return os.path.join(ROOT, "experiments", "configs", f"mnist_{model}_cpu.py")


def recipe(model: str) -> mnist_search.Setting:
  """The searched recipe of ``model``: its shipped config read back, or :data:`GLOW_RECIPE`."""
  if model == "glow":
    return GLOW_RECIPE
  return mnist_search.setting_from_config(load_config(recipe_path(model)), model)


def synthetic_mnist(n_train: int, n_test: int, seed: int = 0) -> ImageDataset:
  """Random 28x28 images with a blob of structure, for the script's smoke test (not MNIST)."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n_train + n_test, 28, 28, 1), dtype=np.uint8)
  labels = rng.integers(0, 10, n_train + n_test).astype(np.int32)
  return ImageDataset("synthetic", images[:n_train], labels[:n_train], images[n_train:], labels[n_train:],
                      num_levels=256, num_classes=10)


# ------------------------------------------------------------------------------------------ JAX sides
class JaxSide:
  """A flow of ``setting`` trained by ``mnist_search``'s optax step (its schedule a factor per step)."""

  def __init__(self, key: str, setting: mnist_search.Setting, x_init: jax.Array, preprocessing):
    self.key, self.setting, self.batch_size = key, setting, setting.batch_size
    self.built = mnist_search.build(setting, x_init, EVAL_ROULETTE)
    self.model, self.variables = self.built.model, self.built.variables
    self.n_params = parameter_count(self.variables["params"])
    self.name = NAMES[key] + (f" (coupling width {setting.hidden})" if key == "glow" else " (iresflow)")
    optimizer, self._step = mnist_search.make_step(self.built, setting, preprocessing)
    self.opt_state = optimizer.init(self.variables["params"])
    self._bits_per_dim = mnist_search.bits_per_dim_fn(self.built, preprocessing)

  def step_flops(self, images: np.ndarray) -> float:
    """FLOPs of one training step, from XLA's cost analysis of the compiled step."""
    compiled = self._step.lower(self.variables, self.opt_state, jnp.asarray(images), jax.random.key(0),
                                1.0).compile()
    analysis = compiled.cost_analysis()
    return float((analysis[0] if isinstance(analysis, list) else analysis)["flops"])

  def step(self, images: np.ndarray, key: jax.Array, scale: float) -> float:
    self.variables, self.opt_state, loss = self._step(self.variables, self.opt_state, jnp.asarray(images), key,
                                                      scale)
    return float(loss)  # waits for the step: the clock measures finished work

  def bits_per_dim(self, x: np.ndarray, pre_logdet: np.ndarray, key: jax.Array) -> np.ndarray:
    return np.asarray(self._bits_per_dim(self.variables, jnp.asarray(x), jnp.asarray(pre_logdet), key))

  def samples(self, z: np.ndarray) -> np.ndarray:
    """Images in [0, 1] from latents ``z`` (n, 784); a residual flow's by the fixed-point inverse."""
    if isinstance(self.model, GlowImageFlow):
      x = self.model.apply(self.variables, jnp.asarray(z), (28, 28, 1), method=self.model.sample)
    else:
      x, state = self.model.apply(self.variables, jnp.asarray(z), solver=FixedPointSolver(),
                                  method=self.model.inverse, mutable=[INVERSE_INFO])
      self.last_inverse_info = inverse_info(state)
    return np.asarray(inverse_logit_transform(x, LOGIT_ALPHA))


# -------------------------------------------------------------------------------------- normflows side
class NormflowsSide:
  """The i-ResNet's architecture built from normflows' parts, trained with torch.optim.Adam."""

  name = NAMES["normflows"]
  batch_size = 64

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
        net = nf.nets.LipschitzCNN([channels, hidden, hidden, channels], [3, 1, 3], lipschitz_const=NORMFLOWS_COEFF,
                                   max_lipschitz_iter=NORMFLOWS_POWER_ITERATIONS, init_zeros=False)
        data_direction += [nf.flows.ActNorm((channels, 1, 1)),
                           nf.flows.Residual(net, reduce_memory=False, n_power_series=NORMFLOWS_TERMS, n_samples=1)]
    size = 28 // 2 ** len(stages)
    base = nf.distributions.DiagGaussian((channels, size, size), trainable=False)
    self.model = nf.NormalizingFlow(base, data_direction[::-1])
    # The first pass initialises ActNorm from data and shapes the power-iteration vectors.
    self.model.forward_kld(self._torch(x_init)).backward()
    self.model.zero_grad()
    nf.utils.update_lipschitz(self.model, 50)
    self.optimizer = torch.optim.Adam(self.model.parameters(), lr=NORMFLOWS_LEARNING_RATE)
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
              n_curve_points: int, max_steps: int | None) -> list[dict]:
  """Trains ``side`` for ``budget_s`` seconds of training; returns the curve (bits/dim on ``curve_images``)."""
  sampler = BatchSampler(len(data.train_images), side.batch_size, seed=0)
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
      scale = mnist_search.learning_rate_scale(step, trained, budget_s, side.setting.schedule)
      loss = side.step(images, jax.random.key(step), scale)
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
  estimators = {EVAL_CHECK_NAME: (EVAL_ROULETTE, n_draws), "roulette_2_exact": (Roulette(), n_draws),
                "series_20": (PowerSeries(n_terms=20), 1)}
  if only_eval:
    estimators = {EVAL_CHECK_NAME: estimators[EVAL_CHECK_NAME]}
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


def keep_one_setting_results(output_dir: str) -> None:
  """Moves an ``mnist_density.json`` of the one-setting protocol (and its figures) to ``*_one_setting.*``."""
  path = os.path.join(output_dir, "mnist_density.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    if json.load(f).get("protocol") == "recipes":
      return
  for name in ["mnist_density.json", "mnist_density.md", "mnist_density_curve.png"] + [
      f"mnist_density_{key}.png" for key in ("iresnet", "glow", "normflows")]:
    if os.path.exists(os.path.join(output_dir, name)):
      moved = name.replace("mnist_density", "mnist_density_one_setting", 1)
      shutil.move(os.path.join(output_dir, name), os.path.join(output_dir, moved))
      print(f"kept the one-setting run's {name} as {moved}", flush=True)


def one_setting_results(output_dir: str) -> dict | None:
  """The one-setting run's results kept in ``output_dir`` (``mnist_density_one_setting.json``), if any."""
  path = os.path.join(output_dir, "mnist_density_one_setting.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def earlier_entries(output_dir: str, dataset: str, budget_s: float, rerun: list[str]) -> dict:
  """The entries of an earlier recipes run in ``output_dir`` (same data and budget) for the models not rerun.

  ``--models`` reruns some models and keeps the others' results, so one model can be trained again
  (say, after its run shared the machine) without retraining all of them.
  """
  path = os.path.join(output_dir, "mnist_density.json")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    earlier = json.load(f)
  if (earlier.get("protocol") != "recipes" or earlier.get("dataset") != dataset
      or earlier.get("budget_seconds") != budget_s):
    return {}
  kept = {key: e for key, e in earlier.get("models", {}).items() if key not in rerun}
  if kept:
    print(f"keeping the earlier run's results for {', '.join(kept)} (rerunning {', '.join(rerun)})", flush=True)
  return kept


def estimator_check_text(key: str, entry: dict) -> str:
  """The table's cell for ``estimator_check``: the test estimator's mean error against the exact log-det.

  Marked as failing when the error is more than 3 standard errors from 0: the estimator is unbiased in
  theory, but with Lip(g) near 1 its tail is heavy, and a test bits/dim it gives is then not trustworthy.
  """
  if key == "glow":
    return "0 (exact log-det)"
  check = entry.get("estimator_check", {})
  if f"{EVAL_CHECK_NAME}_minus_exact_bits_per_dim" not in check:
    return "not checked"
  error, se = check[f"{EVAL_CHECK_NAME}_minus_exact_bits_per_dim"], check[f"{EVAL_CHECK_NAME}_minus_exact_se"]
  text = f"{error:+.4f} ± {se:.4f} ({check['n_images']} images)"
  return text + (" **fails: over 3 s.e.**" if abs(error) > 3 * se else "")


def write_table_and_curve(results: dict, one_setting: dict | None, output_dir: str) -> None:
  """Writes ``mnist_density.md`` (the table) and ``mnist_density_curve.png`` from ``results``."""
  curve_figure({e["name"]: e["curve"] for e in results["models"].values()},
               os.path.join(output_dir, "mnist_density_curve.png"))
  table = results_table(results, one_setting)
  print(table)
  with open(os.path.join(output_dir, "mnist_density.md"), "w") as f:
    f.write(table + "\n")


def results_table(results: dict, one_setting: dict | None) -> str:
  """The markdown table: this run's models, then the one-setting run's rows (when kept)."""
  test_set = f"{results['n_test']:,} {'synthetic ' if results['dataset'] == 'synthetic' else ''}test images"
  rows = [f"| model | recipe | parameters | steps in the budget | "
          f"test bits/dim ± s.e. ({test_set}) | certified | test estimator − exact log-det (bits/dim) |",
          "|---|---|---:|---:|---:|---|---|"]

  def row(key, e, recipe_text):
    certified = (f"yes (max Lip(g) bound {e['max_lipschitz_bound']:.4f})" if e.get("certified") else
                 "**no**" if "certified" in e else "n/a (no certificate)" if key == "normflows" else
                 "n/a (coupling)")
    return (f"| {e['name']} | {recipe_text} | {e['parameters']:,} | {e['steps']:,} | "
            f"{e['test_bits_per_dim']:.3f} ± {e['test_bits_per_dim_se']:.3f} | {certified} | "
            f"{estimator_check_text(key, e)} |")

  for key, e in results["models"].items():
    recipe_text = ("one setting" if key == "normflows" else
                   f"searched: {mnist_search.changes(e['setting'])}")
    rows.append(row(key, e, recipe_text))
  for key, e in (one_setting or {}).get("models", {}).items():
    rows.append(row(key, e, "one setting (earlier run)"))
  return "\n".join(rows)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data-dir", default=None, help="TFDS data_dir holding the prepared mnist")
  parser.add_argument("--output-dir", "--docs-dir", dest="output_dir",
                      default=os.path.join("workdirs", "mnist_density"),
                      help="results folder (--docs-dir docs: the committed results)")
  parser.add_argument("--minutes", type=float, default=20.0, help="training budget per model (wall-clock)")
  parser.add_argument("--models", nargs="+", choices=[*RESIDUAL_FLOWS, "glow", "normflows"],
                      default=[*RESIDUAL_FLOWS, "glow", "normflows"])
  parser.add_argument("--quick", action="store_true", help="synthetic data, tiny models, a few steps")
  parser.add_argument("--flops", action="store_true",
                      help="only write each JAX model's FLOPs per training step (mnist_density_flops.json)")
  parser.add_argument("--table-only", action="store_true",
                      help="train nothing: rewrite mnist_density.md and the curve from the folder's mnist_density.json")
  args = parser.parse_args()
  if args.table_only:
    with open(os.path.join(args.output_dir, "mnist_density.json")) as f:
      results = json.load(f)
    write_table_and_curve(results, one_setting_results(args.output_dir), args.output_dir)
    return
  settings = {key: recipe(key) for key in args.models if key != "normflows"}  # a bad config fails here, first
  if args.quick:
    settings = {key: dataclasses.replace(s, stages=(1,) * len(s.stages), hidden=4) for key, s in settings.items()}
    data = synthetic_mnist(256, 40)
    budget_s, max_steps, n_curve, n_curve_images, n_check = 1e9, 3, 1, 40, 10  # one eval batch shape
  else:
    data = load_image_dataset("mnist", data_dir=args.data_dir)
    budget_s, max_steps, n_curve, n_curve_images, n_check = 60 * args.minutes, None, 6, 1000, 100
  preprocessing = DensityPreprocessing(num_levels=256, logit_alpha=LOGIT_ALPHA)
  x_init, _ = preprocessed(preprocessing, data.train_images[:64], seed=0)
  curve_images = data.test_images[np.random.default_rng(0).permutation(len(data.test_images))[:n_curve_images]]
  z = np.asarray(jax.random.normal(jax.random.key(42), (64, 28 * 28)))

  os.makedirs(args.output_dir, exist_ok=True)
  if args.flops:  # why the budgets buy different step counts: arithmetic per step of the JAX sides
    flops = {key: JaxSide(key, s, x_init, preprocessing).step_flops(data.train_images[:s.batch_size])
             for key, s in settings.items()}
    print({key: f"{value / 1e9:.2f} GFLOP per training step" for key, value in flops.items()}, flush=True)
    with open(os.path.join(args.output_dir, "mnist_density_flops.json"), "w") as f:
      json.dump({"flops_per_training_step": flops, "batch_sizes": {k: s.batch_size for k, s in settings.items()},
                 "settings": {k: mnist_search.as_json(s) for k, s in settings.items()},
                 "backend": jax.default_backend()}, f, indent=1)
    return
  keep_one_setting_results(args.output_dir)
  one_setting = one_setting_results(args.output_dir)
  results = {"protocol": "recipes", "dataset": data.name, "n_train": len(data.train_images),
             "n_test": len(data.test_images), "budget_seconds": budget_s, "logit_alpha": LOGIT_ALPHA,
             "models": earlier_entries(args.output_dir, data.name, budget_s, args.models)}
  for key in args.models:
    if key == "normflows":
      try:
        side = NormflowsSide((1, 1) if args.quick else NORMFLOWS_STAGES, 4 if args.quick else NORMFLOWS_HIDDEN,
                             x_init)
      except ImportError as error:
        print(f"normflows side skipped: {error} (pip install 'iresflow[bench]')", flush=True)
        continue
    else:
      side = JaxSide(key, settings[key], x_init, preprocessing)
    print(f"training {side.name} ({side.n_params:,} parameters) for {budget_s:.0f} s", flush=True)
    curve = train_for(side, data, preprocessing, budget_s, curve_images, n_curve, max_steps)
    start = time.perf_counter()
    if isinstance(side, JaxSide):  # norm estimates refreshed for the final parameters, as the trainer does
      side.variables = mnist_search.refreshed(side.built, side.variables)
    print(f"  evaluating {side.name} on {len(data.test_images):,} test images", flush=True)
    per_image = test_bits_per_dim(side, preprocessing, data.test_images)
    entry = {"name": side.name, "parameters": side.n_params, "steps": curve[-1]["step"],
             "train_seconds": curve[-1]["seconds"], "curve": curve,
             "test_bits_per_dim": float(per_image.mean()),
             "test_bits_per_dim_se": float(per_image.std(ddof=1) / math.sqrt(len(per_image))),
             "test_seconds": time.perf_counter() - start}
    if isinstance(side, JaxSide):
      entry["setting"] = mnist_search.as_json(side.setting)
    print(f"  sampling {side.name}", flush=True)
    samples = side.samples(z)
    if key in RESIDUAL_FLOWS:
      print(f"  certifying {side.name}", flush=True)
      certificate = certify(side.model, side.variables)
      entry["certified"] = bool(certificate.certified)
      entry["eval_refresh_iterations"] = mnist_search.EVAL_REFRESH_ITERATIONS
      entry["max_lipschitz_bound"] = float(certificate.max_lipschitz_bound)
      entry["certificate"] = certificate.to_dict()  # per block and layer: which bound reaches 1, if one does
      if not certificate.certified:
        print(certificate.table(), flush=True)
      entry["samples_converged"] = bool(jnp.all(side.last_inverse_info.converged))
      print(f"  checking {side.name}'s estimator against the exact log-det", flush=True)
      entry["estimator_check"] = estimator_check(side, preprocessing, data.test_images[:n_check],
                                                 only_eval=args.quick)
    print(f"{side.name}: test {entry['test_bits_per_dim']:.4f} ± {entry['test_bits_per_dim_se']:.4f} bits/dim "
          f"after {entry['steps']} steps", flush=True)
    plots.image_grid(samples, os.path.join(args.output_dir, f"mnist_density_{key}.png"),
                     f"{side.name}: samples, test {entry['test_bits_per_dim']:.3f} bits/dim")
    entry["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results["models"][key] = entry
    with open(os.path.join(args.output_dir, "mnist_density.json"), "w") as f:
      json.dump(results, f, indent=1)
    jax.clear_caches()

  write_table_and_curve(results, one_setting, args.output_dir)
  print(f"wrote mnist_density.json, mnist_density.md, mnist_density_curve.png and the sample grids to "
        f"{args.output_dir}", flush=True)


if __name__ == "__main__":
  main()
