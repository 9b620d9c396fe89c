"""A budgeted recipe search on real MNIST: the same trials and minutes for every model, ranked on validation.

Four models: the i-ResNet (truncated power series), the Residual Flow (unbiased Russian roulette with
the Neumann-series gradient, Chen et al. 2019), the i-DenseNet (Lipschitz DenseNet residual functions
with CLipSwish, Perugachi-Diaz et al. 2021) and the Glow-style coupling flow
(``iresflow.baselines.GlowImageFlow``). Each has a base setting (the layout of
``experiments/mnist_density.py``: two stages of 4 blocks after an initial squeeze, about 55,000
parameters) and 11 variations that change one thing (estimator, number of terms, gradient, ``c``,
stages and initial squeeze, width, factor-out, learning rate, its schedule, optimizer, batch size) or
combine the changes that the i-ResNet's first users found to help. Every trial trains from the same
initial seed with a plain optax loop for the same training budget (compilation included, the
evaluations off the clock) on 55,000 training images. The first round's budget counts the process's
CPU time over the cores it may use, so that trials stay comparable while the machine does other work;
XLA:CPU keeps only part of the cores busy, so such a budget buys more steps than the same wall-clock
(docs/mnist_search.md gives both per trial). The final round counts wall-clock, as
``experiments/mnist_density.py`` does (``--clock`` overrides either). Trials are ranked by bits/dim
on held-out images of the training set (the last 5,000 of a fixed permutation: never the test set),
estimated with the unbiased roulette with 20 exact terms (Glow: exact). Round ``first`` runs every
trial at ``--minutes`` (5) and validates on 1,000 held-out images; round ``final`` reruns the best
``--top`` trials of each model at ``--final-minutes`` (20), each also with its learning rate decayed
linearly to 0 over the budget's last quarter (``'<trial>, final decay'``), and validates on all 5,000
held-out images.

Resumable: results go to ``mnist_search.json`` after every trial, and a rerun skips the trials it
holds (an interrupted trial starts again). ``--models`` and ``--trials`` pick a subset.

    python -m iresflow.data.prepare mnist --data-dir ~/tensorflow_datasets     # once (~30 s)
    python experiments/mnist_search.py --data-dir ~/tensorflow_datasets --docs-dir docs       # 52 x 5 min
    python experiments/mnist_search.py --data-dir ~/tensorflow_datasets --docs-dir docs --round final
    python experiments/mnist_search.py --data-dir ~/tensorflow_datasets --docs-dir docs --round final \\
        --models idensenet --top 1                  # the best i-DenseNet trial, with and without the decay
    python experiments/mnist_search.py --quick              # synthetic data, tiny models (the test suite)

Writes ``mnist_search.json`` and ``mnist_search.md`` (every trial, and each change's effect against
its model's base) into ``--output-dir`` (default ``workdirs/mnist_search``; ``--docs-dir docs`` for the
committed results).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from iresflow import certify
from iresflow.baselines import GlowImageFlow, parameter_count
from iresflow.core import jit_run_once
from iresflow.data import BatchSampler, load_image_dataset
from iresflow.models import IResNetFlow
from iresflow.nn import LipschitzConstraint, PowerSeries, ResidualSpec, Roulette
from iresflow.train.state import FINAL_DECAY_FRACTION
from iresflow.train.tasks import DensityPreprocessing
from iresflow.train.workdir import evaluation_variables

LOGIT_ALPHA = 1e-6
WARMUP_STEPS, GRAD_CLIP = 100, 1.0
N_VALIDATION = 5_000
EVAL_ROULETTE = Roulette(n_exact_terms=20, precision="highest")
EVAL_BATCH = 100
DIM = 28 * 28
# Norm-estimator steps run on the final parameters before validating and certifying, as the trainer does
# (config.eval_refresh_iterations): the stored estimate is the one of the weights before the last update.
EVAL_REFRESH_ITERATIONS = 10


@dataclasses.dataclass(frozen=True)
class Setting:
  """One trial's recipe. ``hidden``: conv channels of g (i-DenseNet: the growth; Glow: coupling width)."""

  model: str
  stages: tuple[int, ...] = (4, 4)
  initial_squeeze: bool = True
  factor_out: bool = False
  hidden: int = 32
  coeff: float = 0.9
  norm_iterations: int = 10  # Lanczos steps of every layer's norm estimate per training step
  activation: str = "lipswish"
  estimator: str = "series"  # 'series' (truncated power series) or 'roulette'
  n_terms: int = 5  # series: its terms; roulette: its exact terms
  gradient: str = "backprop"  # series only; the roulette always takes the Neumann gradient
  learning_rate: float = 1e-3
  schedule: str = "constant"  # 'cosine': decay to 0 over the budget; 'final_decay': over its last quarter
  optimizer: str = "adam"
  batch_size: int = 64


# Widths that give the i-DenseNet and the Glow-style flow the i-ResNet base's parameters (about 55,000;
# ``iresflow.baselines.matching_width``).
IDENSENET_GROWTH, GLOW_WIDTH = 7, 38
BASES = {
    "iresnet": Setting("iresnet"),
    "residual_flow": Setting("residual_flow", coeff=0.98, estimator="roulette", n_terms=2, gradient="neumann"),
    "idensenet": Setting("idensenet", hidden=IDENSENET_GROWTH, coeff=0.98, activation="clipswish",
                         estimator="roulette", n_terms=2, gradient="neumann"),
    "glow": Setting("glow", hidden=GLOW_WIDTH),
}
THREE_STAGES = dict(stages=(4, 4, 4), initial_squeeze=False)  # a first stage at full resolution
VARIATIONS = {
    "iresnet": {"base": {}, "neumann gradient": dict(gradient="neumann"), "3 terms": dict(n_terms=3),
                "10 terms": dict(n_terms=10), "lr 3e-3": dict(learning_rate=3e-3), "cosine": dict(schedule="cosine"),
                "2 norm steps": dict(norm_iterations=2), "width 64": dict(hidden=64), "batch 128": dict(batch_size=128),
                "3 stages, no squeeze": THREE_STAGES, "factor-out": dict(factor_out=True),
                "neumann, lr 3e-3, 3 stages": dict(gradient="neumann", learning_rate=3e-3, **THREE_STAGES),
                "neumann, lr 3e-3": dict(gradient="neumann", learning_rate=3e-3)},
    "residual_flow": {"base": {}, "1 exact term": dict(n_terms=1), "4 exact terms": dict(n_terms=4),
                      "c 0.9": dict(coeff=0.9), "lr 3e-3": dict(learning_rate=3e-3), "cosine": dict(schedule="cosine"),
                      "width 64": dict(hidden=64), "batch 128": dict(batch_size=128),
                      "3 stages, no squeeze": THREE_STAGES, "factor-out": dict(factor_out=True),
                      "adamax": dict(optimizer="adamax"),
                      "lr 3e-3, 3 stages": dict(learning_rate=3e-3, **THREE_STAGES),
                      "lr 3e-3, 1 exact term": dict(learning_rate=3e-3, n_terms=1)},
    "idensenet": {"base": {}, "lr 3e-3": dict(learning_rate=3e-3), "cosine": dict(schedule="cosine"),
                  "c 0.9": dict(coeff=0.9), "3 stages, no squeeze": THREE_STAGES, "factor-out": dict(factor_out=True),
                  "5-term series, neumann": dict(estimator="series", n_terms=5),
                  "growth 14": dict(hidden=2 * IDENSENET_GROWTH), "batch 128": dict(batch_size=128),
                  "4 exact terms": dict(n_terms=4),
                  "lipswish, growth 14": dict(activation="lipswish", hidden=2 * IDENSENET_GROWTH),
                  "lr 3e-3, 3 stages": dict(learning_rate=3e-3, **THREE_STAGES),
                  "lr 3e-3, 1 exact term": dict(learning_rate=3e-3, n_terms=1)},
    "glow": {"base": {}, "lr 3e-3": dict(learning_rate=3e-3), "lr 3e-4": dict(learning_rate=3e-4),
             "cosine": dict(schedule="cosine"), "batch 128": dict(batch_size=128), "batch 32": dict(batch_size=32),
             "width 76": dict(hidden=2 * GLOW_WIDTH), "width 19": dict(hidden=GLOW_WIDTH // 2),
             "stages 8, 8": dict(stages=(8, 8)), "stages 2, 2": dict(stages=(2, 2)), "adamax": dict(optimizer="adamax"),
             "cosine, lr 3e-3": dict(schedule="cosine", learning_rate=3e-3),
             "lr 3e-3, stages 2, 2": dict(learning_rate=3e-3, stages=(2, 2))},
}
MODELS = tuple(VARIATIONS)


def trials(models, quick: bool) -> dict[str, Setting]:
  """``'model/variation' -> Setting`` for the first round (``quick``: tiny models, the bases and one more)."""
  out = {}
  for model in models:
    base = BASES[model]
    if quick:
      base = dataclasses.replace(base, stages=(1, 1), hidden=4)
    variations = list(VARIATIONS[model].items())
    if quick:  # the Glow-style flow's second trial compiles in a fraction of an i-ResNet's
      variations = variations[:2 if model == "glow" else 1]
    for label, change in variations:
      if quick and "stages" in change:
        change = {**change, "stages": (1,) * len(change["stages"])}
      out[f"{model}/{label}"] = dataclasses.replace(base, **change)
  return out


# ---------------------------------------------------------------------------------------------- recipes
def setting_from_config(config, model: str) -> Setting:
  """The search's ``Setting`` of a training config (``experiments/configs/mnist_<model>_cpu.py``).

  The shipped configs are ``experiments/train.py`` configs; this reads back the fields the search
  varies, so that a test can check a config against the search's winner and ``mnist_density.py`` can
  train it with the search's loop.

  Args:
    config: a ``ml_collections.ConfigDict`` with the trainer's keys.
    model: ``'iresnet'``, ``'residual_flow'`` or ``'idensenet'`` (which base the changes are read against).

  Raises:
    ValueError: naming the config key, where the config leaves the search's fixed protocol (MNIST, logit
      alpha 1e-6, 100 warm-up steps, clipping at 1, no EMA, one probe) or sets something it never varies.
  """
  fixed = {"dataset": "mnist", "logit_alpha": LOGIT_ALPHA, "warmup_steps": WARMUP_STEPS, "grad_clip": GRAD_CLIP,
           "ema_decay": 0.0, "weight_decay": 0.0, "task": "density"}
  for key, expected in fixed.items():
    if config[key] != expected:
      raise ValueError(f"config.{key}: the search's protocol has {expected!r}, the config {config[key]!r}")
  if model not in ("iresnet", "residual_flow", "idensenet"):
    raise ValueError(f"model: expected 'iresnet', 'residual_flow' or 'idensenet', got {model!r}")
  layout = dict(config.model)
  residual = dict(layout.pop("residual", {}))
  constraint = dict(residual.pop("constraint", {}))
  densenet = model == "idensenet"
  expected_kernels = (3, 3, 3, 1) if densenet else (3, 1, 3)
  if residual.pop("architecture", "chain") != ("densenet" if densenet else "chain"):
    raise ValueError(f"config.model.residual.architecture: expected {'densenet' if densenet else 'chain'!r} "
                     f"for {model!r}")
  if tuple(residual.pop("kernel_sizes", expected_kernels)) != expected_kernels:
    raise ValueError(f"config.model.residual.kernel_sizes: the search uses {expected_kernels}")
  estimator = {k: v for k, v in dict(config.estimator).items() if v is not None}
  kind = estimator.pop("kind")
  if estimator.pop("n_probes", 1) != 1:
    raise ValueError("config.estimator.n_probes: the search trains with one probe")
  if kind == "roulette":
    n_terms, gradient = estimator.pop("n_exact_terms", Roulette().n_exact_terms), "neumann"
  elif kind == "series":
    n_terms, gradient = estimator.pop("n_terms", PowerSeries().n_terms), estimator.pop("gradient", "backprop")
  else:
    raise ValueError(f"config.estimator.kind: expected 'series' or 'roulette', got {kind!r}")
  leftover = {"model": sorted(set(layout) - {"stages", "initial_squeeze", "factor_out"}),
              "model.residual": sorted(set(residual) - {"hidden", "activation"}),
              "model.residual.constraint": sorted(set(constraint) - {"coeff", "n_power_iterations"}),
              "estimator": sorted(set(estimator) - {"precision", "unroll", "remat"})}
  for where, keys in leftover.items():
    if keys:
      raise ValueError(f"config.{where}: {keys} are not settings the search varies")
  base = Setting(model)
  return Setting(model, stages=tuple(layout.get("stages", base.stages)),
                 initial_squeeze=layout.get("initial_squeeze", True), factor_out=layout.get("factor_out", False),
                 hidden=residual.get("hidden", ResidualSpec().hidden), coeff=constraint.get("coeff", 0.9),
                 norm_iterations=constraint.get("n_power_iterations", LipschitzConstraint().n_power_iterations),
                 activation=residual.get("activation", "lipswish"), estimator=kind, n_terms=n_terms,
                 gradient=gradient, learning_rate=config.learning_rate, schedule=config.schedule,
                 optimizer=config.optimizer, batch_size=config.batch_size)


# ----------------------------------------------------------------------------------------------- models
@dataclasses.dataclass
class Built:
  """A model's variables and its log-prob functions ``(variables, x, key) -> ...``."""

  model: object
  variables: dict
  train_log_prob: object  # -> (log p, updated collections)
  eval_log_prob: object  # -> log p


def model_and_estimator(setting: Setting):
  """The flow of ``setting`` and its training log-det estimator (None for the Glow-style flow)."""
  if setting.model == "glow":
    return GlowImageFlow(tuple(setting.stages), setting.hidden), None
  densenet = setting.model == "idensenet"
  residual = ResidualSpec(hidden=setting.hidden, kernel_sizes=(3, 3, 3, 1) if densenet else (3, 1, 3),
                          activation=setting.activation, architecture="densenet" if densenet else "chain",
                          constraint=LipschitzConstraint(coeff=setting.coeff,
                                                         n_power_iterations=setting.norm_iterations))
  model = IResNetFlow(data_shape=(28, 28, 1), stages=tuple(setting.stages), residual=residual,
                      initial_squeeze=setting.initial_squeeze, factor_out=setting.factor_out)
  if setting.estimator == "roulette":
    return model, Roulette(n_exact_terms=setting.n_terms)
  return model, PowerSeries(n_terms=setting.n_terms, gradient=setting.gradient)


def initial_variables(model, estimator, x_init: jax.Array) -> dict:
  """Variables from the seed every trial shares (one compiled call, not op by op)."""
  key = jax.random.key(0)
  if estimator is None:
    return jax.jit(model.init)(key, x_init)
  return dict(jit_run_once(lambda x: model.init({"params": key, "logdet": key}, x, estimator=estimator))(x_init))


def build(setting: Setting, x_init: jax.Array, eval_estimator: Roulette = EVAL_ROULETTE) -> Built:
  """The model of ``setting`` and its log-prob functions."""
  model, estimator = model_and_estimator(setting)
  variables = initial_variables(model, estimator, x_init)
  if estimator is None:
    return Built(model, variables, lambda v, x, k: (model.apply(v, x), {}), lambda v, x, k: model.apply(v, x))

  def train_log_prob(v, x, k):
    return model.apply(v, x, estimator=estimator, rngs={"logdet": k}, mutable=["spectral"])

  def eval_log_prob(v, x, k):
    return model.apply(v, x, estimator=eval_estimator, rngs={"logdet": k})

  return Built(model, variables, train_log_prob, eval_log_prob)


def training_clock(kind: str):
  """Seconds of training so far: wall-clock, or this process's CPU time over the cores it may use."""
  if kind == "wall":
    return time.perf_counter
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
  return lambda: time.process_time() / cores


def learning_rate_scale(step: int, elapsed: float, budget: float, schedule: str) -> float:
  """Linear warm-up over the first steps, then constant, a cosine over the training budget, or (``final_decay``)
  constant and then linear to 0 over the budget's last ``FINAL_DECAY_FRACTION``, as the trainer's schedules
  do over steps."""
  scale = min(1.0, (step + 1) / WARMUP_STEPS)
  progress = min(1.0, elapsed / budget)
  if schedule == "cosine":
    scale *= 0.5 * (1 + math.cos(math.pi * progress))
  elif schedule == "final_decay":
    scale *= min(1.0, (1 - progress) / FINAL_DECAY_FRACTION)
  return scale


def make_step(built: Built, setting: Setting, preprocessing: DensityPreprocessing):
  """A jitted Adam (or Adamax) step; the learning rate's schedule enters as a traced factor."""
  base = optax.adamax if setting.optimizer == "adamax" else optax.adam
  optimizer = optax.chain(optax.clip_by_global_norm(GRAD_CLIP), base(setting.learning_rate))

  @jax.jit
  def step(variables, opt_state, images, key, scale):
    data_key, model_key = jax.random.split(key)
    x, pre_logdet = preprocessing(data_key, images)

    def loss_fn(params):
      log_prob, updated = built.train_log_prob({**variables, "params": params}, x, model_key)
      return jnp.mean(preprocessing.loss_per_example(log_prob + pre_logdet, DIM)), updated

    (loss, updated), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
    updates, opt_state = optimizer.update(grads, opt_state, variables["params"])
    updates = jax.tree.map(lambda u: u * scale, updates)
    return {**variables, **updated, "params": optax.apply_updates(variables["params"], updates)}, opt_state, loss

  return optimizer, step


def refreshed(built: Built, variables: dict) -> dict:
  """The variables to validate and certify: a residual flow's norm estimates refreshed for its final
  parameters (``EVAL_REFRESH_ITERATIONS`` steps, as the trainer does); a coupling flow's as they are."""
  if "spectral" not in variables:
    return variables
  return evaluation_variables(built.model, variables["params"], variables["spectral"], EVAL_REFRESH_ITERATIONS)


def bits_per_dim_fn(built: Built, preprocessing: DensityPreprocessing):
  """Jitted ``(variables, x, pre_logdet, key) -> bits/dim per image`` of ``built``'s evaluation log-prob."""
  return jax.jit(lambda v, x, pre, key: preprocessing.loss_per_example(built.eval_log_prob(v, x, key) + pre, DIM))


def validation_bits_per_dim(built: Built, variables: dict, preprocessing, images: np.ndarray, desc: str
                            ) -> np.ndarray:
  """Per-image bits/dim: one dequantisation and one estimator draw per image, the same for every trial."""
  evaluate = bits_per_dim_fn(built, preprocessing)
  values = []
  for lo in tqdm(range(0, len(images), EVAL_BATCH), desc=f"  validating {desc}", leave=False, dynamic_ncols=True):
    x, pre_logdet = preprocessing(jax.random.key(10**6 + lo), jnp.asarray(images[lo:lo + EVAL_BATCH]))
    values.append(np.asarray(evaluate(variables, x, pre_logdet, jax.random.key(2 * 10**6 + lo))))
  return np.concatenate(values)


def run_trial(name: str, setting: Setting, train_images: np.ndarray, validation_images: np.ndarray,
              budget_s: float, max_steps: int | None, eval_estimator: Roulette = EVAL_ROULETTE,
              clock: str = "cpu") -> dict:
  """Trains ``setting`` for ``budget_s`` seconds; returns its validation bits/dim and what it cost."""
  preprocessing = DensityPreprocessing(num_levels=256, logit_alpha=LOGIT_ALPHA)
  x_init, _ = preprocessing(jax.random.key(0), jnp.asarray(train_images[:64]))
  built = build(setting, x_init, eval_estimator)
  optimizer, step = make_step(built, setting, preprocessing)
  variables, opt_state = built.variables, optimizer.init(built.variables["params"])
  sampler = BatchSampler(len(train_images), setting.batch_size, seed=0)
  trained, wall, n, losses = 0.0, 0.0, 0, []
  now = training_clock(clock)
  bar = tqdm(total=max_steps or int(budget_s), desc=f"  {name}", unit="step" if max_steps else "s",
             dynamic_ncols=True, mininterval=2.0)
  while trained < budget_s and (max_steps is None or n < max_steps):
    images = jnp.asarray(train_images[sampler.global_indices(n)])
    scale = learning_rate_scale(n, trained, budget_s, setting.schedule)
    start, wall_start = now(), time.perf_counter()
    variables, opt_state, loss = step(variables, opt_state, images, jax.random.key(n), scale)
    loss = float(loss)  # waits for the step: the clock measures finished work
    trained += now() - start
    wall += time.perf_counter() - wall_start
    n += 1
    if not math.isfinite(loss):
      bar.close()
      return {"setting": dataclasses.asdict(setting), "diverged_at_step": n, "steps": n,
              "train_seconds": trained, "parameters": parameter_count(variables["params"])}
    losses.append(loss)
    bar.set_postfix(step=n, loss=f"{np.mean(losses[-50:]):.3f}", refresh=False)
    bar.update((n if max_steps else min(int(trained), int(budget_s))) - bar.n)
  bar.close()
  variables = refreshed(built, variables)
  per_image = validation_bits_per_dim(built, variables, preprocessing, validation_images, name)
  result = {"setting": dataclasses.asdict(setting), "parameters": parameter_count(variables["params"]),
            "steps": n, "train_seconds": trained, "train_wall_seconds": wall, "steps_per_second": n / trained,
            "train_loss_last_100": float(np.mean(losses[-100:])),
            "validation_images": len(validation_images),
            "validation_bits_per_dim": float(per_image.mean()),
            "validation_se": float(per_image.std(ddof=1) / math.sqrt(len(per_image)))}
  if setting.model != "glow":
    result["eval_refresh_iterations"] = EVAL_REFRESH_ITERATIONS
    print(f"  certifying {name}", flush=True)
    certificate = certify(built.model, variables)
    result["certified"] = bool(certificate.certified)
    result["max_lipschitz_bound"] = float(certificate.max_lipschitz_bound)
    if not certificate.certified:
      result["certificate_diagnoses"] = [f"{b.name}: {b.diagnosis()}" for b in certificate.blocks if not b.certified]
      print(certificate.table(), flush=True)
  print(f"  {name}: {result['validation_bits_per_dim']:.4f} ± {result['validation_se']:.4f} bits/dim (validation) "
        f"after {n} steps ({result['steps_per_second']:.2f}/s)", flush=True)
  return result


def stored_setting(entry: dict) -> dict:
  """A trial's setting as stored, with fields added to ``Setting`` since then at their defaults."""
  return {**as_json(Setting(entry["setting"]["model"])), **entry["setting"]}


def failed_certificate(entry: dict) -> bool:
  """Whether the trial's model, with its norm estimates refreshed, was not certified (not a recipe)."""
  return entry.get("certified") is False and "eval_refresh_iterations" in entry


def best_trials(entries: dict, models, top: int) -> list[str]:
  """The ``top`` trials of each model with the lowest validation bits/dim.

  Diverged trials are left out, and so are residual flows whose refreshed model failed its certificate
  (trials validated before the refresh was added keep their place: their certificate was of stale estimates).
  """
  picked = []
  for model in models:
    done = sorted((r["validation_bits_per_dim"], name) for name, r in entries.items()
                  if name.startswith(model + "/") and "validation_bits_per_dim" in r and not failed_certificate(r))
    picked += [name for _, name in done[:top]]
  return picked


FINAL_DECAY = "final decay"


def final_round_trials(first_round: dict[str, Setting], best: list[str]) -> dict[str, Setting]:
  """The final round: the first round's ``best`` trials, each also with the learning rate decayed over the
  last quarter of the budget (``'<trial>, final decay'``) where it held it constant.

  A schedule's worth depends on the budget, which is why the decay is tried at the final round's: at 5
  minutes a cosine over the whole budget cost every model (it leaves too few steps at a high rate), while
  the 20-minute runs at a constant rate end noisy.
  """
  planned = {}
  for name in best:
    if name not in first_round:
      continue
    planned[name] = first_round[name]
    if first_round[name].schedule == "constant":
      planned[f"{name}, {FINAL_DECAY}"] = dataclasses.replace(first_round[name], schedule="final_decay")
  return planned


# --------------------------------------------------------------------------------------------- profile
PROFILED = {  # what each change to a residual flow's step costs or saves (#31 item 4), on the i-ResNet base
    "i-ResNet base (5-term series, backprop)": BASES["iresnet"],
    "Neumann gradient": dataclasses.replace(BASES["iresnet"], gradient="neumann"),
    "3 terms": dataclasses.replace(BASES["iresnet"], n_terms=3),
    "2 norm steps (of 10)": dataclasses.replace(BASES["iresnet"], norm_iterations=2),
    "Neumann gradient, 2 norm steps": dataclasses.replace(BASES["iresnet"], gradient="neumann", norm_iterations=2),
    "roulette, 2 exact terms (Residual Flow base)": BASES["residual_flow"],
    "roulette, 1 exact term": dataclasses.replace(BASES["residual_flow"], n_terms=1),
    "i-DenseNet base": BASES["idensenet"],
    "Glow-style base": BASES["glow"],
}


def step_profile(train_images: np.ndarray, repeats: int, quick: bool, labels=None) -> dict:
  """CPU seconds per training step of each ``PROFILED`` setting (median of ``repeats``), and XLA's FLOPs.

  ``labels``: a subset of ``PROFILED``'s keys (None: all); ``quick``: tiny models.
  """
  preprocessing = DensityPreprocessing(num_levels=256, logit_alpha=LOGIT_ALPHA)
  images = jnp.asarray(train_images[:64])
  x_init, _ = preprocessing(jax.random.key(0), images)
  rows = {}
  profiled = {label: PROFILED[label] for label in (labels or PROFILED)}
  for label, setting in tqdm(profiled.items(), desc="profiling steps", dynamic_ncols=True):
    if quick:
      setting = dataclasses.replace(setting, stages=(1, 1), hidden=4)
    built = build(setting, x_init, Roulette(n_exact_terms=2))
    optimizer, step = make_step(built, setting, preprocessing)
    state = (built.variables, optimizer.init(built.variables["params"]))
    compiled = step.lower(*state, images, jax.random.key(0), 1.0).compile()
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    jax.block_until_ready(step(*state, images, jax.random.key(0), 1.0))
    clock, times = training_clock("cpu"), []
    for i in range(repeats):
      start = clock()
      jax.block_until_ready(step(*state, images, jax.random.key(i), 1.0))
      times.append(clock() - start)
    rows[label] = {"setting": as_json(setting), "cpu_seconds_per_step": float(np.median(times)),
                   "flops_per_step": float(analysis.get("flops", float("nan")))}
    jax.clear_caches()
  return rows


def profile_table(rows: dict) -> str:
  base = next(iter(rows.values()))["cpu_seconds_per_step"]
  lines = ["| step | CPU s per step (over the usable cores) | steps/s | vs the i-ResNet base | GFLOP per step |",
           "|---|---:|---:|---:|---:|"]
  for label, r in rows.items():
    seconds = r["cpu_seconds_per_step"]
    lines.append(f"| {label} | {seconds:.3f} | {1 / seconds:.2f} | {base / seconds:.2f}x | "
                 f"{r['flops_per_step'] / 1e9:.2f} |")
  return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- report
# Around the ablation and best-trial tables in mnist_search.md, so that the guide and results.md can
# include them (MyST ``start-after``/``end-before``).
ABLATION_START, ABLATION_END = "<!-- ablation table -->", "<!-- end of the ablation table -->"
BEST_START, BEST_END = "<!-- best per model -->", "<!-- end of the best per model -->"
CLOCKS = {"cpu": "the process's CPU time over its usable cores", "wall": "wall-clock"}


def as_json(setting: Setting) -> dict:
  """The setting as the JSON file holds it (tuples as lists)."""
  return json.loads(json.dumps(dataclasses.asdict(setting)))


def changes(setting: dict) -> str:
  base = as_json(BASES[setting["model"]])
  diffs = [f"{k}={v}" for k, v in setting.items() if k != "model" and v != base.get(k, v)]
  return ", ".join(diffs) or "(base)"


def best_per_model(results: dict) -> list[str]:
  """Lines of the table of each model's best trial (of the final round where it has one), against its base."""
  rows = []
  for model in MODELS:
    for round_name in ("final", "first"):
      entries = {n: r for n, r in results["rounds"].get(round_name, {}).items() if n.startswith(model + "/")}
      best = best_trials(entries, [model], top=1)
      if best:
        break
    if not best:
      continue
    r = entries[best[0]]
    base = results["rounds"].get("first", {}).get(f"{model}/base", {}).get("validation_bits_per_dim")
    trials_run = len([label for label in VARIATIONS[model] if f"{model}/{label}" in results["rounds"].get("first", {})])
    rows.append(f"| {model} | {best[0].split('/', 1)[1]} ({r['steps']:,} steps) | `{round_name}` | "
                f"{trials_run} of {len(VARIATIONS[model])} | {r['validation_bits_per_dim']:.3f} ± "
                f"{r['validation_se']:.3f} | {'' if base is None else f'{base:.3f}'} |")
  if not rows:
    return []
  return ["## Best trial per model\n", "Of the final round where it has run, else of the first; the base's "
          "validation bits/dim is its first-round one.\n", BEST_START,
          "| model | best trial | round | first-round trials run | validation bits/dim | its base (first round) |",
          "|---|---|---|---|---:|---:|", *rows, "", BEST_END, ""]


def report(results: dict) -> str:
  lines = [f"# Recipe search on MNIST\n\nWritten, with mnist_search.json, by the command given under each round. "
           f"Machine: {results['machine']}. "
           "Validation: held-out images of the training set (never the test "
           "set), the unbiased roulette with 20 exact terms (Glow: exact log-det); bits/dim ± standard error "
           "over images. Δ: against the model's base trial of the same round (negative is better). "
           f"Residual flows are validated and certified after {EVAL_REFRESH_ITERATIONS} more norm-estimator steps "
           "on their final parameters, as the trainer does; trials marked * ran before that refresh was added and "
           "used the estimates stored at their last step, which lag the last update (so a bound just above 1 "
           "there says little about the refreshed model).\n"]
  for round_name in ("first", "final"):
    entries = results["rounds"].get(round_name, {})
    if not entries:
      continue
    minutes = results["round_minutes"][round_name]
    command, clock = results["round_commands"][round_name], results["round_clocks"][round_name]
    lines += [f"## Round `{round_name}` ({minutes:g} minutes per trial)\n",
              f"Command: `{command}`; the training budgets count {CLOCKS[clock]}.\n",
              "| model | trial | change from the base | parameters | steps | steps per budget s | wall-clock (s) | "
              "validation bits/dim | Δ | certified |", "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for model in MODELS:
      rows = {name: r for name, r in entries.items() if name.startswith(model + "/")}
      base = rows.get(f"{model}/base", {}).get("validation_bits_per_dim")
      ranked = sorted(rows.items(), key=lambda item: item[1].get("validation_bits_per_dim", math.inf))
      for name, r in ranked:
        label = name.split("/", 1)[1]
        if "validation_bits_per_dim" not in r:
          lines.append(f"| {model} | {label} | {changes(r['setting'])} | {r['parameters']:,} | {r['steps']:,} | | | "
                       f"diverged at step {r['diverged_at_step']} | | |")
          continue
        delta = "" if base is None or label == "base" else f"{r['validation_bits_per_dim'] - base:+.3f}"
        certified = "n/a" if model == "glow" else ("yes" if r.get("certified") else "**no**")
        if model != "glow" and "eval_refresh_iterations" not in r:
          certified += " *"
        lines.append(f"| {model} | {label} | {changes(r['setting'])} | {r['parameters']:,} | {r['steps']:,} | "
                     f"{r['steps_per_second']:.2f} | {r['train_wall_seconds']:.0f} | "
                     f"{r['validation_bits_per_dim']:.3f} ± {r['validation_se']:.3f} | "
                     f"{delta} | {certified} |")
    lines.append("")
  lines += best_per_model(results)
  first = results["rounds"].get("first", {})
  labels = [label for label in dict.fromkeys(label for model in MODELS for label in VARIATIONS[model])
            if label != "base"]
  cells = {}
  for model in MODELS:
    base = first.get(f"{model}/base", {}).get("validation_bits_per_dim")
    for label in labels:
      r = first.get(f"{model}/{label}")
      if base is not None and r is not None:
        cells[label, model] = (f"{r['validation_bits_per_dim'] - base:+.3f}" if "validation_bits_per_dim" in r
                               else "diverged")
  if cells:
    lines += ["## Effect of each change (round `first`)\n",
              "Δ validation bits/dim against the model's base (negative is better); blank: not tried or not run "
              "yet.\n", ABLATION_START, "| change | " + " | ".join(MODELS) + " |", "|---|" + "---:|" * len(MODELS)]
    for label in labels:
      if any((label, model) in cells for model in MODELS):
        lines.append(f"| {label} | " + " | ".join(cells.get((label, model), "") for model in MODELS) + " |")
    lines += ["", ABLATION_END, ""]
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data-dir", default=None, help="TFDS data_dir holding the prepared mnist")
  parser.add_argument("--output-dir", "--docs-dir", dest="output_dir", default=os.path.join("workdirs", "mnist_search"),
                      help="results folder (--docs-dir docs: the committed results)")
  parser.add_argument("--round", choices=["first", "final"], default="first")
  parser.add_argument("--minutes", type=float, default=5.0, help="training budget of a first-round trial")
  parser.add_argument("--final-minutes", type=float, default=20.0, help="training budget of a final-round trial")
  parser.add_argument("--top", type=int, default=2, help="final round: the best trials of each model it reruns")
  parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
  parser.add_argument("--trials", nargs="+", default=None, help="only these trials ('model/variation')")
  parser.add_argument("--clock", choices=["cpu", "wall"], default=None,
                      help="what the budget counts: CPU time over the usable cores (trials stay comparable on a "
                           "shared machine; the first round's default) or wall-clock (the final round's default)")
  parser.add_argument("--quick", action="store_true", help="synthetic data, tiny models, 3 steps per trial")
  parser.add_argument("--profile", action="store_true",
                      help="only time one training step of each change to the residual flows' step "
                           "(mnist_search_profile.{json,md})")
  args = parser.parse_args()
  args.clock = args.clock or ("cpu" if args.round == "first" else "wall")

  os.makedirs(args.output_dir, exist_ok=True)
  path = os.path.join(args.output_dir, "mnist_search.json")
  results = {"rounds": {}, "round_minutes": {}}
  if os.path.exists(path):
    with open(path) as f:
      results = json.load(f)
  command = "python experiments/mnist_search.py --data-dir ~/tensorflow_datasets --docs-dir docs"
  round_command = command + ("" if args.round == "first" else " --round final")
  if args.round == "final":
    round_command += ("" if set(args.models) == set(MODELS) else " --models " + " ".join(args.models)) + (
        "" if args.top == parser.get_default("top") else f" --top {args.top}")
  if "command" in results:  # a file from before commands were kept per round: its one was the first round's
    results.setdefault("round_commands", {}).setdefault("first", results.pop("command"))
    results.setdefault("round_clocks", {}).setdefault("first", results.pop("clock"))
  results.setdefault("round_commands", {})[args.round] = round_command
  results.setdefault("round_clocks", {})[args.round] = args.clock
  results.update(machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                         f"{jax.default_backend()}", quick=args.quick)

  if args.quick:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (300, 28, 28, 1), dtype=np.uint8)
    train_images, held_out, budget_s, max_steps = images[:260], images[260:], 1e9, 3
    results["dataset"] = "synthetic"
  else:
    data = load_image_dataset("mnist", data_dir=args.data_dir)
    order = np.random.default_rng(0).permutation(len(data.train_images))
    train_images, held_out = data.train_images[order[N_VALIDATION:]], data.train_images[order[:N_VALIDATION]]
    budget_s, max_steps = None, None
    results["dataset"] = "mnist"

  if args.profile:
    rows = step_profile(train_images, repeats=2 if args.quick else 20, quick=args.quick)
    profile = {"command": command + " --profile", "machine": results["machine"], "batch_size": 64, "steps": rows,
               "dataset": results["dataset"]}
    with open(os.path.join(args.output_dir, "mnist_search_profile.json"), "w") as f:
      json.dump(profile, f, indent=1)
    table = profile_table(rows)
    with open(os.path.join(args.output_dir, "mnist_search_profile.md"), "w") as f:
      f.write(f"# Cost of a training step on MNIST, by change\n\nCommand: `{profile['command']}` (written by it, with "
              f"mnist_search_profile.json). Machine: {profile['machine']}. Batch 64; the median of the CPU time "
              f"of 20 steps over the usable cores, after compiling. What each change does to bits/dim: "
              f"[the search](mnist_search.md).\n\n{table}\n")
    print(table)
    return
  planned = trials(args.models, args.quick)
  if args.round == "first":
    minutes = args.minutes
    validation = held_out if args.quick else held_out[:1000]
  else:
    minutes = args.final_minutes
    validation = held_out
    planned = final_round_trials(planned, best_trials(results["rounds"].get("first", {}), args.models, args.top))
  if args.trials:
    unknown = sorted(set(args.trials) - set(planned))
    if unknown:
      parser.error(f"--trials: unknown or not planned in this round: {unknown}; planned: {sorted(planned)}")
    planned = {name: planned[name] for name in args.trials}
  budget_s = budget_s or 60 * minutes
  results["round_minutes"][args.round] = minutes
  entries = results["rounds"].setdefault(args.round, {})
  todo = [name for name in planned if name not in entries or stored_setting(entries[name]) != as_json(planned[name])]
  print(f"round {args.round}: {len(planned)} trials of {minutes:g} minutes, {len(planned) - len(todo)} done, "
        f"{len(todo)} to run (about {len(todo) * (minutes + 0.7):.0f} minutes with validation)", flush=True)
  for i, name in enumerate(todo):
    print(f"[{i + 1}/{len(todo)}] {name}: {changes(as_json(planned[name]))}", flush=True)
    entries[name] = run_trial(name, planned[name], train_images, validation, budget_s, max_steps,
                              Roulette(n_exact_terms=2) if args.quick else EVAL_ROULETTE,  # quick: a small compile
                              args.clock)
    entries[name]["setting"] = as_json(planned[name])
    jax.clear_caches()  # a long search compiles many programs: free the finished trial's
    with open(path, "w") as f:
      json.dump(results, f, indent=1)
    with open(os.path.join(args.output_dir, "mnist_search.md"), "w") as f:
      f.write(report(results))
  with open(path, "w") as f:
    json.dump(results, f, indent=1)
  text = report(results)
  with open(os.path.join(args.output_dir, "mnist_search.md"), "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  main()
