"""Everything a training run needs before its first step, built from a config in one place.

:func:`setup_training` checks the config, loads the data, builds the model, its task, the optimizer,
the initial (replicated) train state and the jitted train step over the ``('data',)`` mesh.
``train_and_evaluate`` runs it; ``benchmarks/full_size_step.py`` times it on synthetic data
(:meth:`TrainingData.synthetic`), so the benchmark measures exactly what training runs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from iresflow.data import (IMAGE_DATASETS, TOY_DENSITIES, BatchSampler, load_image_dataset, sample_toy)
from iresflow.train import sharding
from iresflow.core.compilation import jit_run_once
from iresflow.core.estimators import estimator_settings
from iresflow.train.builders import TASKS, build_model, make_estimator
from iresflow.train.config import ConfigError
from iresflow.train.state import TrainState, create_optimizer
from iresflow.train.steps import make_train_step, stop_at_first_non_finite
from iresflow.train.tasks import ClassificationTask, DensityPreprocessing, DensityTask, HybridTask


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises :class:`ConfigError` (a ``ValueError``) naming the first bad setting, before any work is done."""
  if config.task not in TASKS:
    raise ConfigError(f"config.task: expected one of {TASKS}, got {config.task!r}")
  known = IMAGE_DATASETS + (tuple(TOY_DENSITIES) if config.task == "density" else ())
  if config.task == "hybrid" and not config.hybrid_weight >= 0:
    raise ConfigError(f"config.hybrid_weight: expected a non-negative number, got {config.hybrid_weight}")
  if config.dataset not in known:
    raise ConfigError(f"config.dataset: unknown dataset {config.dataset!r}; expected one of {list(known)}")
  for name in ("num_steps", "batch_size", "eval_batch_size", "finite_check_every"):
    if not isinstance(config[name], int) or config[name] < 1:
      raise ConfigError(f"config.{name}: expected a positive integer, got {config[name]!r}")
  for name in ("log_every", "checkpoint_every", "eval_refresh_iterations"):
    if not isinstance(config[name], int) or config[name] < 0:
      raise ConfigError(f"config.{name}: expected a non-negative integer, got {config[name]!r}")
  if not 0.0 <= config.ema_decay < 1.0:
    raise ConfigError(f"config.ema_decay: expected a value in [0, 1), got {config.ema_decay}")


@dataclasses.dataclass(frozen=True)
class TrainingData:
  """Training and test arrays on the host (every process holds all of them).

  Attributes:
    name: dataset name.
    train, test: integer images ``(N, H, W, C)``, or float vectors ``(N, d)`` for 2-D toys.
    train_labels, test_labels: labels, or None for toys.
    num_levels: levels of the integer images; None for continuous data.
    num_classes: label classes (0 for toys).
  """

  name: str
  train: np.ndarray
  train_labels: np.ndarray | None
  test: np.ndarray
  test_labels: np.ndarray | None
  num_levels: int | None
  num_classes: int

  @property
  def data_shape(self) -> tuple[int, ...]:
    return tuple(self.train.shape[1:])

  @classmethod
  def load(cls, config: ml_collections.ConfigDict) -> "TrainingData":
    """The dataset named by ``config.dataset`` (test set cut to ``num_eval_examples`` if set)."""
    n_test = config.num_eval_examples or None
    if config.dataset in TOY_DENSITIES:
      train = sample_toy(config.dataset, config.toy_train_size, seed=config.seed)
      test = sample_toy(config.dataset, config.toy_test_size, seed=config.seed + 1)
      return cls(config.dataset, train, None, test[:n_test], None, None, 0)
    data = load_image_dataset(config.dataset, data_dir=config.data_dir, download=config.download)
    return cls(config.dataset, data.train_images, data.train_labels, data.test_images[:n_test],
               data.test_labels[:n_test], data.num_levels, data.num_classes)

  @classmethod
  def synthetic(cls, data_shape: tuple[int, ...], num_levels: int, num_examples: int, num_classes: int = 10,
                seed: int = 0) -> "TrainingData":
    """Uniformly random integer images of a dataset's shape (for timing: a step's cost ignores the values)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, num_levels, (num_examples,) + tuple(data_shape), dtype=np.uint8)
    labels = rng.integers(0, num_classes, num_examples).astype(np.int32)
    return cls("synthetic", images, labels, images, labels, num_levels, num_classes)


def make_task(config: ml_collections.ConfigDict, model, data: TrainingData):
  """The task object of ``config.task`` for ``model`` on ``data``."""
  if config.task == "classification":
    return ClassificationTask(model, data.num_levels, config.augment_padding, config.augment_flip, config.seed)
  preprocessing = DensityPreprocessing(data.num_levels, config.get("logit_alpha"))
  estimator = make_estimator(config.estimator)
  # Test metrics at full float32 matmul precision unless the config says otherwise (configs that
  # replace the whole eval_estimator dict keep that default).
  eval_settings = dict(config.eval_estimator)
  if eval_settings.get("precision") is None and "precision" in estimator_settings(eval_settings.get("kind")):
    eval_settings["precision"] = "highest"
  eval_estimator = make_estimator(eval_settings, "eval_estimator")
  if config.task == "hybrid":
    return HybridTask(model, preprocessing, estimator, eval_estimator, hybrid_weight=config.hybrid_weight)
  return DensityTask(model, preprocessing, estimator, eval_estimator)


@dataclasses.dataclass
class Training:
  """What :func:`setup_training` builds.

  Attributes:
    config, data, model, task, optimizer, mesh: as named.
    sampler: the global batch order (this process's slice via ``local_indices``).
    state: the initial train state, replicated over the mesh.
    train_step: jitted ``(state, divergence, batch) -> (state, divergence, metrics)``; ``state`` is donated.
    keys: PRNG keys ``'step'``, ``'eval'`` and ``'sample'``.
  """

  config: ml_collections.ConfigDict
  data: TrainingData
  model: Any
  task: Any
  optimizer: Any
  mesh: Any
  sampler: BatchSampler
  state: TrainState
  train_step: Callable
  keys: dict

  def local_batch(self, step: int) -> tuple[np.ndarray, ...]:
    """This process's part of the global batch of ``step`` (host arrays)."""
    return self.task.batch(self.data, self.sampler.local_indices(step), step)

  def device_batch(self, step: int) -> tuple[jax.Array, ...]:
    """The global batch of ``step``, assembled from every process's part and split over the mesh."""
    return tuple(sharding.shard_batch(self.mesh, part) for part in self.local_batch(step))


def setup_training(config: ml_collections.ConfigDict, data: TrainingData | None = None, mesh=None) -> Training:
  """Builds a :class:`Training` from ``config`` (data loaded from ``config.dataset`` unless given)."""
  check_config(config)
  optimizer = create_optimizer(
      config.optimizer, config.learning_rate, num_steps=config.num_steps, warmup_steps=config.warmup_steps,
      schedule=config.schedule, grad_clip=config.grad_clip, weight_decay=config.weight_decay)
  mesh = sharding.data_mesh() if mesh is None else mesh
  sharding.check_batch_size(config.batch_size, mesh)
  sharding.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
  data = TrainingData.load(config) if data is None else data
  model = build_model(config, data.data_shape, data.num_classes)
  task = make_task(config, model, data)
  init_key, step_key, eval_key, sample_key = jax.random.split(jax.random.key(config.seed), 4)
  if config.batch_size > len(data.train):
    raise ConfigError(f"config.batch_size: expected at most the {len(data.train)} training examples of "
                      f"{config.dataset!r}, got {config.batch_size}")
  sampler = BatchSampler(len(data.train), config.batch_size, config.seed, jax.process_index(), jax.process_count())
  init_batch = task.batch(data, sampler.global_indices(0), 0)
  variables = jit_run_once(task.init_variables)(init_key, init_batch)  # compiled fast: it runs once
  state = jax.device_put(TrainState.create(variables, optimizer), sharding.replicated(mesh))
  step = stop_at_first_non_finite(make_train_step(task, optimizer, config.ema_decay, step_key))
  replicated = sharding.replicated(mesh)
  train_step = jax.jit(step, out_shardings=(replicated, replicated, replicated), donate_argnums=0)
  return Training(config, data, model, task, optimizer, mesh, sampler, state, train_step,
                  {"step": step_key, "eval": eval_key, "sample": sample_key})
