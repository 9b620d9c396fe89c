"""``train_and_evaluate(config, workdir)``: the training job for density models and classifiers.

Data parallel over every device (``jax.jit`` + ``NamedSharding`` on a ``('data',)`` mesh), with
Orbax checkpoints every ``checkpoint_every`` steps and at the end, a progress bar, metrics as JSON
lines (``workdir/metrics.jsonl``), and at the end an evaluation written to ``workdir/results.json``:
test bits/dim (or accuracy) with the estimator stated, the reconstruction error of the inverse, the
Lipschitz certificate, and sample grids (PNG).

Restarting with the same ``workdir`` continues from the last checkpoint with the same data order and
the same random numbers, so the run ends as an uninterrupted one would. A non-finite loss or
gradient stops the run (:class:`TrainingDivergedError`) and leaves the last good checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

import iresflow
from iresflow.core.logdet import series_truncation_bound
from iresflow.data import (IMAGE_DATASETS, TOY_DENSITIES, BatchSampler, augment_crop_flip, inverse_logit_transform,
                           load_image_dataset, sample_toy)
from iresflow.models import IResNetClassifier, IResNetFlow
from iresflow.nn import InverseOptions, LogDetOptions
from iresflow.train import plots, sharding, steps
from iresflow.train.checkpoint import Checkpointer
from iresflow.train.state import TrainState, create_optimizer

TASKS = ("density", "classification", "hybrid")


class TrainingDivergedError(RuntimeError):
  """The loss or the gradients became NaN/inf; the last good checkpoint is kept."""


# ----------------------------------------------------------------------------------------- config
def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ``ValueError`` naming the first bad setting, before any work is done."""
  if config.task not in TASKS:
    raise ValueError(f"config.task: expected one of {TASKS}, got {config.task!r}")
  known = IMAGE_DATASETS + (tuple(TOY_DENSITIES) if config.task == "density" else ())
  if config.task == "hybrid" and not config.hybrid_weight >= 0:
    raise ValueError(f"config.hybrid_weight: expected a non-negative number, got {config.hybrid_weight}")
  if config.dataset not in known:
    raise ValueError(f"config.dataset: unknown dataset {config.dataset!r}; expected one of {list(known)}")
  for name in ("num_steps", "batch_size"):
    if not isinstance(config[name], int) or config[name] < 1:
      raise ValueError(f"config.{name}: expected a positive integer, got {config[name]!r}")
  for name in ("log_every", "checkpoint_every"):
    if not isinstance(config[name], int) or config[name] < 0:
      raise ValueError(f"config.{name}: expected a non-negative integer, got {config[name]!r}")
  if not 0.0 <= config.ema_decay < 1.0:
    raise ValueError(f"config.ema_decay: expected a value in [0, 1), got {config.ema_decay}")


def _check_workdir(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, ".write_test")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as error:
    raise ValueError(f"workdir: {workdir!r} is not a writable directory ({error})") from error


# ------------------------------------------------------------------------------------------- data
class _Data:
  """Training and test arrays on the host, in the form the steps take."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.toy = config.dataset in TOY_DENSITIES
    if self.toy:
      self.train = sample_toy(config.dataset, config.toy_train_size, seed=config.seed)
      self.test = sample_toy(config.dataset, config.toy_test_size, seed=config.seed + 1)
      self.train_labels = self.test_labels = None
      self.num_levels, self.num_classes = None, 0
    else:
      dataset = load_image_dataset(config.dataset, data_dir=config.data_dir, download=config.download)
      self.train, self.train_labels = dataset.train_images, dataset.train_labels
      self.test, self.test_labels = dataset.test_images, dataset.test_labels
      self.num_levels, self.num_classes = dataset.num_levels, dataset.num_classes
      if config.num_eval_examples:
        self.test, self.test_labels = self.test[:config.num_eval_examples], self.test_labels[:config.num_eval_examples]
    self.data_shape = tuple(self.train.shape[1:])


# ------------------------------------------------------------------------------------------ model
def build_model(config: ml_collections.ConfigDict, data_shape: tuple, num_classes: int):
  """The model named by ``config.task`` with ``config.model`` as keyword arguments."""
  kwargs = dict(config.model)
  if config.task == "classification":
    return IResNetClassifier(num_classes=num_classes, **kwargs)
  if config.task == "hybrid":
    kwargs["num_classes"] = num_classes
  if len(data_shape) == 1:
    kwargs.setdefault("stages", ())
    kwargs.setdefault("initial_squeeze", False)
  return IResNetFlow(data_shape=data_shape, **kwargs)


def _logdet_options(config_dict) -> LogDetOptions:
  return LogDetOptions(**dict(config_dict))


# ---------------------------------------------------------------------------------------- logging
class _MetricsWriter:
  """Appends JSON lines; on resume, drops lines from steps after the restored checkpoint."""

  def __init__(self, path: str, resume_step: int):
    self.path = path
    if os.path.exists(path):
      with open(path) as f:
        kept = [line for line in f if json.loads(line).get("step", 0) <= resume_step]
      with open(path, "w") as f:
        f.writelines(kept)

  def write(self, record: dict) -> None:
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")


def _to_python(metrics: dict) -> dict:
  return {k: (float(v) if np.ndim(v) == 0 and not isinstance(v, (bool, np.bool_)) else v)
          for k, v in jax.device_get(metrics).items()}


# ------------------------------------------------------------------------------------------- main
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains, checkpoints and evaluates; returns the evaluation results (also in results.json)."""
  check_config(config)
  _check_workdir(workdir)
  optimizer = create_optimizer(
      config.optimizer, config.learning_rate, num_steps=config.num_steps, warmup_steps=config.warmup_steps,
      schedule=config.schedule, grad_clip=config.grad_clip, weight_decay=config.weight_decay)
  mesh = sharding.data_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  data = _Data(config)
  model = build_model(config, data.data_shape, data.num_classes)
  with open(os.path.join(workdir, "model.json"), "w") as f:
    json.dump({"task": config.task, "data_shape": list(data.data_shape), "num_classes": data.num_classes,
               "model": config.model.to_dict(), "ema": config.ema_decay > 0}, f, indent=2)
  key = jax.random.key(config.seed)
  init_key, step_key, eval_key, sample_key = jax.random.split(key, 4)

  density = config.task in ("density", "hybrid")
  hybrid = config.task == "hybrid"
  preprocessing = steps.DensityPreprocessing(data.num_levels, config.get("logit_alpha"))
  sampler = BatchSampler(len(data.train), config.batch_size, config.seed, jax.process_index(), jax.process_count())
  init_batch = data.train[sampler.global_indices(0)]
  if density:
    x_init, _ = preprocessing(jnp.asarray(init_batch), init_key)
  else:
    x_init = jnp.asarray(init_batch, jnp.float32) / (data.num_levels - 1) - 0.5
  variables = jax.jit(model.init)(init_key, x_init)
  state = jax.device_put(TrainState.create(variables, optimizer), sharding.replicated(mesh))

  if density:
    train_step = steps.make_density_train_step(model, optimizer, preprocessing, _logdet_options(config.logdet),
                                               config.ema_decay, step_key,
                                               hybrid_weight=config.hybrid_weight if hybrid else None)
  else:
    train_step = steps.make_classifier_train_step(model, optimizer, config.ema_decay, data.num_levels)
  train_step = jax.jit(train_step, out_shardings=(sharding.replicated(mesh), sharding.replicated(mesh)),
                       donate_argnums=0)

  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
  start = 0
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore(state)
    start = int(state.step)
    print(f"Resumed from the checkpoint at step {start} in {checkpointer.directory}", file=sys.stderr)
  metrics_writer = _MetricsWriter(os.path.join(workdir, "metrics.jsonl"), start)
  augment_rng = lambda step: np.random.default_rng([config.seed, 7, step])

  progress = tqdm(range(start, config.num_steps), initial=start, total=config.num_steps, desc="train",
                  disable=not config.progress, dynamic_ncols=True, mininterval=1.0)
  tick, tick_step = time.time(), start
  for step in progress:
    indices = sampler.local_indices(step)
    images = data.train[indices]
    if density and not hybrid:
      batch = sharding.shard_batch(mesh, images)
    elif hybrid:
      batch = (sharding.shard_batch(mesh, images), sharding.shard_batch(mesh, data.train_labels[indices]))
    else:
      if config.augment_padding or config.augment_flip:
        images = augment_crop_flip(images, augment_rng(step), config.augment_padding, config.augment_flip)
      batch = (sharding.shard_batch(mesh, images), sharding.shard_batch(mesh, data.train_labels[indices]))
    state, metrics = train_step(state, batch)
    if not bool(metrics["finite"]):
      last = checkpointer.latest_step()
      checkpointer.close()
      raise TrainingDivergedError(
          f"step {step}: the loss or the gradients are not finite (loss={float(metrics['loss'])}); training "
          f"stopped. The last good checkpoint is step {last} in {checkpointer.directory}; lower the "
          f"learning rate or raise gradient clipping and restart from it.")
    done = step + 1
    if config.log_every and (done % config.log_every == 0 or done == config.num_steps):
      record = _to_python(metrics)
      record.pop("finite")
      if hybrid:
        record["bits_per_dim"] = record.pop("density_loss")
      else:
        record.pop("density_loss", None)
      record["steps_per_second"] = (done - tick_step) / max(time.time() - tick, 1e-9)
      tick, tick_step = time.time(), done
      metrics_writer.write({"step": done, "split": "train", **record})
      label = "bits/dim" if density and data.num_levels else ("nll" if density else "acc")
      value = record.get("bits_per_dim", record["loss"]) if density else record["accuracy"]
      postfix = {"loss": f"{record['loss']:.4f}", label: f"{value:.4f}"}
      if hybrid:
        postfix["acc"] = f"{record['accuracy']:.3f}"
      progress.set_postfix({**postfix, "steps/s": f"{record['steps_per_second']:.2f}"})
    if config.checkpoint_every and done % config.checkpoint_every == 0 and done < config.num_steps:
      checkpointer.save(done, state)
  progress.close()
  if checkpointer.latest_step() != config.num_steps:
    checkpointer.save(config.num_steps, state)
  checkpointer.close()

  evaluate = _evaluate_density if density else _evaluate_classifier
  results = evaluate(config, model, state, data, preprocessing, eval_key, sample_key, workdir)
  results["step"] = int(state.step)
  metrics_writer.write({"step": int(state.step), "split": "test", **{k: v for k, v in results.items()
                                                                      if isinstance(v, (int, float))}})
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  return results


# ------------------------------------------------------------------------------------- evaluation
def _eval_variables(config, model, state: TrainState, x_refresh) -> dict:
  """Variables for evaluation: EMA (or live) params, with the norm estimates refreshed for them."""
  variables = jax.device_get(state.variables(use_ema=config.ema_decay > 0))
  if "spectral" in variables:
    # Flows take the log-det options as a second argument; None skips the log-det.
    args = (x_refresh,) if config.task == "classification" else (x_refresh, LogDetOptions(None))
    refresh = jax.jit(lambda v: model.apply(v, *args, mutable=["spectral"])[1]["spectral"])
    for _ in range(config.eval_refresh_iterations):
      variables = {**variables, "spectral": refresh(variables)}
  return variables


def _batches(n: int, size: int):
  for start in range(0, n, size):
    yield start, min(start + size, n)


def _certificate(model, variables, workdir) -> tuple[Any, dict]:
  certificate = iresflow.certify(model, variables)
  with open(os.path.join(workdir, "certificate.json"), "w") as f:
    json.dump(certificate.to_dict(), f, indent=2)
  return certificate, {"certified": certificate.certified, "max_lipschitz_bound": certificate.max_lipschitz_bound}


def _evaluate_density(config, model, state, data, preprocessing, eval_key, sample_key, workdir) -> dict:
  x_refresh, _ = preprocessing(jnp.asarray(data.train[:config.batch_size]), eval_key)
  variables = _eval_variables(config, model, state, x_refresh)
  certificate, results = _certificate(model, variables, workdir)
  logdet = _logdet_options(config.eval_logdet)
  eval_step = jax.jit(steps.make_density_eval_step(model, preprocessing, logdet, eval_key))
  losses, predictions = [], []
  for i, (lo, hi) in enumerate(_batches(len(data.test), config.eval_batch_size)):
    out = eval_step(variables, jnp.asarray(data.test[lo:hi]), jnp.asarray(i))
    losses.append(np.asarray(out[0] if model.num_classes else out))
    if model.num_classes:
      predictions.append(np.asarray(out[1]))
  test_loss = float(np.mean(np.concatenate(losses)))
  if model.num_classes:
    results["test_accuracy"] = float(np.mean(np.concatenate(predictions) == data.test_labels))
  dim = math.prod(data.data_shape)
  metric = "test_bits_per_dim" if data.num_levels else "test_nll"
  results[metric] = test_loss
  if logdet.mode == "exact":
    results["estimator"] = "exact log-det (jax.jacfwd + slogdet): no estimator bias"
  elif logdet.mode == "roulette":
    results["estimator"] = (f"unbiased Russian-roulette series ({logdet.n_exact_terms} exact terms, "
                            f"{logdet.distribution}, at most {logdet.max_terms} terms), {logdet.n_probes} probes")
  elif logdet.mode is None:
    raise ValueError("config.eval_logdet.mode: a density needs a log-det; use 'exact', 'series' or 'roulette'")
  else:
    # Theorem 3 with the certified Lip(g) of each block, each block's dimension at most D.
    bias = sum(series_truncation_bound(min(b.lipschitz_bound, 1 - 1e-9), dim, logdet.n_terms)
               for b in certificate.blocks)
    scale = 1.0 / (dim * math.log(2.0)) if data.num_levels else 1.0
    results["estimator"] = (f"power series, {logdet.n_terms} terms, {logdet.n_probes} probes: truncation bias "
                            f"<= {bias * scale:.4g} {'bits/dim' if data.num_levels else 'nats'} (Theorem 3)")
    results["truncation_bias_bound"] = bias * scale

  # Reconstruction: forward then inverse on test data.
  inverse_options = InverseOptions(**dict(config.inverse))
  x_test, _ = preprocessing(jnp.asarray(data.test[:config.eval_batch_size]), eval_key)
  forward = jax.jit(lambda v, x: model.apply(v, x, LogDetOptions(None), method=model.forward_and_log_det)[0])
  inverse = jax.jit(lambda v, z: model.apply(v, z, inverse_options, method=model.inverse))
  x_back, info = inverse(variables, forward(variables, x_test))
  results["reconstruction_max_abs_error"] = float(jnp.max(jnp.abs(x_back - x_test)))
  results["inverse_not_converged"] = int(jnp.sum(~info.converged))
  results["inverse_worst_residual"] = float(jnp.max(info.residual))

  # Samples.
  sample = jax.jit(lambda v, key: model.apply(v, config.num_samples, inverse_options, method=model.sample,
                                              rngs={"sample": key}))
  samples, sample_info = sample(variables, sample_key)
  results["samples_not_converged"] = int(jnp.sum(~sample_info.converged))
  results["samples_worst_residual"] = float(jnp.max(sample_info.residual))
  samples = np.asarray(samples)
  if data.toy:
    extent = 4.5
    axis = np.linspace(-extent, extent, 120, dtype=np.float32)
    grid = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
    log_density = jax.jit(lambda v, x: model.apply(v, x, LogDetOptions("exact")))
    values = np.concatenate([np.asarray(log_density(variables, grid[lo:hi])) for lo, hi in _batches(len(grid), 1200)])
    many, _ = jax.jit(lambda v, key: model.apply(v, 5000, inverse_options, method=model.sample,
                                                 rngs={"sample": key}))(variables, sample_key)
    plots.density_figure(data.test, np.asarray(many), grid, values, extent, os.path.join(workdir, "density.png"),
                         f"{config.dataset}: test NLL {test_loss:.3f} nats")
  else:
    to_image = ((lambda x: inverse_logit_transform(x, config.logit_alpha)) if config.get("logit_alpha") is not None
                else (lambda x: x + 0.5))
    plots.image_grid(np.asarray(to_image(samples)), os.path.join(workdir, "samples.png"),
                     f"{config.dataset}: samples, test {test_loss:.3f} bits/dim")
    plots.image_grid(np.concatenate([np.asarray(to_image(x_test[:16])), np.asarray(to_image(x_back[:16]))]),
                     os.path.join(workdir, "reconstructions.png"), "top: data, bottom: F^-1(F(data))",
                     columns=16)
  return results


def _evaluate_classifier(config, model, state, data, preprocessing, eval_key, sample_key, workdir) -> dict:
  del preprocessing, eval_key, sample_key  # same signature as _evaluate_density
  x_refresh = jnp.asarray(data.train[:config.batch_size], jnp.float32) / (data.num_levels - 1) - 0.5
  variables = _eval_variables(config, model, state, x_refresh)
  results = {}
  if model.coeff is not None:
    _, results = _certificate(model, variables, workdir)
  eval_step = jax.jit(steps.make_classifier_eval_step(model, data.num_levels))
  correct = [np.asarray(eval_step(variables, jnp.asarray(data.test[lo:hi]), jnp.asarray(data.test_labels[lo:hi])))
             for lo, hi in _batches(len(data.test), config.eval_batch_size)]
  accuracy = float(np.mean(np.concatenate(correct)))
  results.update(test_accuracy=accuracy, test_error=1.0 - accuracy)
  return results
