"""Default training configuration; experiment configs start from it and override what they change.

Every key, with its meaning:

* ``task``: ``'density'``, ``'classification'`` or ``'hybrid'`` (one flow that is a density model and a
  classifier: loss = bits/dim + ``hybrid_weight`` * cross-entropy).
* ``dataset``: ``'digits'``, ``'mnist_small'``, a TFDS name (``mnist``, ``fashion_mnist``, ``cifar10``,
  ``cifar100``, ``svhn_cropped``) or a 2-D toy (``8gaussians``, ``checkerboard``, ...).
  ``data_dir``: TFDS data directory; ``download``: let TFDS download (needs internet + TensorFlow).
* ``model``: keyword arguments of ``IResNetFlow`` / ``IResNetClassifier``; ``residual`` and
  ``fc_residual`` are dicts of ``ResidualSpec`` fields, with ``constraint`` a dict of
  ``LipschitzConstraint`` fields (e.g. ``--config.model.residual.constraint.coeff=0.7``; ``None``
  gives a classifier's unconstrained twin). Fields left out take the specs' defaults. The family:
  ``residual.architecture='densenet'`` with ``activation='clipswish'`` for i-DenseNets,
  ``block_type='monotone'`` (and ``forward_solver``, a dict of solver fields) with ``activation='cpila'``
  for Monotone Flows.
* ``estimator``: the training log-det estimator, ``eval_estimator`` the one for test bits/dim: a
  ``kind`` (``'exact'``, ``'series'``, ``'roulette'``, or one added with
  ``iresflow.core.estimators.register_estimator``) and that estimator's settings (see
  ``iresflow.core.estimators``). Every estimator's settings are present as None, which means the
  estimator's own default; a setting of another kind that is set, or an unknown key, is an error.
  ``estimator.unroll`` and ``model.unroll_blocks`` left at None unroll the series and the blocks on CPU
  only, fully connected blocks with the Neumann gradient excepted (``iresflow.core.loops``);
  ``estimator.remat`` left at None recomputes ``g`` in the backward pass with the Neumann gradient only
  (``iresflow.core.PowerSeries``).
  Precision policy: ``estimator.precision`` (matmul precision of ``g`` and the series; None: JAX's
  default, TensorFloat-32 on recent NVIDIA GPUs) and ``estimator.compute_dtype`` (``'bfloat16'``: ``g``
  and the series in bfloat16, sums in float32; None: float32) apply to the training step only;
  ``eval_estimator.precision`` is ``'highest'``, and the norm estimates, the inverse and the
  certificate run at ``'highest'`` whatever is set (``iresflow.core.precision``; the measurements
  are in docs/precision_policy.md).
* ``solver``: the fixed-point inverse for reconstructions and samples (``atol``, ``rtol``,
  ``max_iters``, ``precision``, ``adjoint_failure``; see ``iresflow.core.FixedPointSolver``).
* ``logit_alpha``: logit transform parameter (None: data - 0.5).
* optimisation: ``optimizer`` (adam/adamax/sgd), ``learning_rate``, ``warmup_steps``, ``schedule``
  (constant/cosine/final_decay: held, then linear to 0 over the last quarter of ``num_steps``),
  ``grad_clip``, ``weight_decay`` (decoupled for Adam/Adamax, L2 for SGD),
  ``ema_decay`` (0 disables EMA), ``batch_size`` (global, divisible by the device count), ``num_steps``.
* ``augment_padding``, ``augment_flip``: classification augmentation (random crop, horizontal flip).
* logging: ``log_every``, ``checkpoint_every`` (0: only at the end), ``progress`` (progress bar),
  ``finite_check_every``: how often the host reads whether a step was not finite (also before every
  log line and checkpoint); between checks the device runs ahead of the host.
* evaluation: ``eval_batch_size`` (global, divisible by the device count), ``num_eval_examples``
  (0: all), ``num_samples``, ``eval_refresh_iterations`` (norm-estimator steps run for the evaluated
  parameters before evaluation and certification).
* ``toy_train_size``, ``toy_test_size``: sizes of generated 2-D data sets.
"""

from __future__ import annotations

import dataclasses
import typing

import ml_collections


class ConfigError(ValueError):
  """A setting of a training config (or a flag of the training command) is wrong; the message names it.

  ``experiments/train.py`` prints the message alone for this error (no traceback: it is the user's
  input, not a bug) and exits with status 2.
  """


# Where the trainer's defaults differ from the library's dataclasses, on purpose (a test checks that
# every other default is the dataclasses' own).
CHOSEN_ON_PURPOSE = {
    "estimator.kind": "a flow needs an estimator to train; the truncated series is the paper's (Algorithm 2)",
    "eval_estimator.kind": "test bits/dim without estimator bias on the small default data (digits)",
    "eval_estimator.precision": "test metrics at full float32 matmul precision on every platform",
    "solver.max_iters": "evaluation inverts trained models whose blocks may sit near c: 500 iterations "
                        "reach 1e-6 for Lip(g) up to 0.97 (200, FixedPointSolver's default, suits c = 0.9)",
}


def _typed_placeholder(annotation):
  """``placeholder(T)`` for a field annotated ``T | None`` (so the command line can set it)."""
  arguments = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
  base = typing.get_origin(arguments[0]) or arguments[0]
  return ml_collections.config_dict.placeholder(base)


def dataclass_defaults(cls) -> dict:
  """The defaults of a frozen dataclass's fields as plain config values; nested dataclasses as dicts."""
  hints = typing.get_type_hints(cls)
  values = {}
  for field in dataclasses.fields(cls):
    default = field.default
    if dataclasses.is_dataclass(default):
      values[field.name] = dataclass_defaults(type(default))
    elif default is None:
      values[field.name] = _typed_placeholder(hints[field.name])
    else:
      values[field.name] = default
  return values


def estimator_defaults(kind: str, **chosen) -> ml_collections.ConfigDict:
  """``kind`` and every setting of every registered estimator as a None placeholder (None: the
  estimator's own default), so that the kind and its settings can be changed from the command line."""
  from iresflow.core import estimators

  settings = {"kind": kind}
  for name, cls in estimators.ESTIMATORS.items():
    hints = typing.get_type_hints(cls.__init__)
    for key in estimators.estimator_settings(name):
      settings.setdefault(key, _typed_placeholder(hints.get(key, str)))
  for key, value in chosen.items():
    settings[key] = value
  return ml_collections.ConfigDict(settings)


def default_config() -> ml_collections.ConfigDict:
  """The trainer's configuration with every key; the model's, estimators' and solver's defaults are the
  library's dataclasses' (``ResidualSpec``, ``PowerSeries``, ``FixedPointSolver``) except where
  :data:`CHOSEN_ON_PURPOSE` says otherwise and why."""
  from iresflow.core.fixed_point import FixedPointSolver
  from iresflow.nn.residual import ResidualSpec

  config = ml_collections.ConfigDict()
  config.task = "density"
  config.hybrid_weight = 1.0
  config.dataset = "digits"
  config.data_dir = ml_collections.config_dict.placeholder(str)
  config.download = False
  config.seed = 0

  config.model = ml_collections.ConfigDict(dict(stages=(4, 4), residual=dataclass_defaults(ResidualSpec)))
  config.estimator = estimator_defaults("series")
  config.eval_estimator = estimator_defaults("exact", precision="highest")
  config.solver = ml_collections.ConfigDict({**dataclass_defaults(FixedPointSolver), "max_iters": 500})
  config.logit_alpha = ml_collections.config_dict.placeholder(float)

  config.optimizer = "adam"
  config.learning_rate = 1e-3
  config.warmup_steps = 100
  config.schedule = "constant"
  config.grad_clip = 1.0
  config.weight_decay = 0.0
  config.ema_decay = 0.999
  config.batch_size = 64
  config.num_steps = 2000

  config.augment_padding = 0
  config.augment_flip = False

  config.log_every = 50
  config.checkpoint_every = 500
  config.finite_check_every = 25
  config.progress = True

  config.eval_batch_size = 128
  config.num_eval_examples = 0
  config.num_samples = 64
  config.eval_refresh_iterations = 10

  config.toy_train_size = 20000
  config.toy_test_size = 5000
  return config


def load_config(path: str) -> ml_collections.ConfigDict:
  """``get_config()`` of a config file (``experiments/configs/*.py``), loaded by path as ``--config`` does."""
  import importlib.util
  import os

  if not os.path.exists(path):
    raise ConfigError(f"config: {path} not found")
  spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()
