"""From a config to objects: the model, its residual specs, the log-det estimators and the solver.

Configs hold plain values (``ml_collections``), so that every setting can be overridden from the
command line; these functions turn them into the library's frozen settings objects, checked when
built.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn

from iresflow.core.estimators import ESTIMATORS, LogDetEstimator, estimator_settings
from iresflow.core.fixed_point import FixedPointSolver
from iresflow.models import IResNetClassifier, IResNetFlow
from iresflow.nn.residual import ResidualSpec
from iresflow.nn.spectral import LipschitzConstraint
from iresflow.train.config import ConfigError

TASKS = ("density", "classification", "hybrid")


def _plain(value: Any) -> Any:
  """A ConfigDict (or nested mapping) as plain dicts; tuples stay tuples."""
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  if isinstance(value, Mapping):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(value)
  return value


def _construct(cls, name: str, **kwargs):
  """``cls(**kwargs)``, its validation errors raised as :class:`ConfigError` naming the config entry."""
  try:
    return cls(**kwargs)
  except (ValueError, TypeError) as error:
    raise ConfigError(f"{name}: {error}") from error


def _fields(cls, settings: Mapping, name: str) -> dict:
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(settings) - known)
  if unknown:
    raise ConfigError(f"{name}: unknown setting(s) {unknown} for {cls.__name__}; expected some of {sorted(known)}")
  return dict(settings)


def residual_spec(settings: Mapping | ResidualSpec | None) -> ResidualSpec:
  """A :class:`ResidualSpec` from a dict of its fields (``constraint`` a dict of ``LipschitzConstraint`` fields)."""
  if isinstance(settings, ResidualSpec):
    return settings
  settings = dict(_plain(settings or {}))
  constraint = settings.pop("constraint", {})
  if not isinstance(constraint, LipschitzConstraint):
    constraint = _construct(LipschitzConstraint, "residual.constraint",
                            **_fields(LipschitzConstraint, _plain(constraint), "residual.constraint"))
  return _construct(ResidualSpec, "residual", **_fields(ResidualSpec, settings, "residual"), constraint=constraint)


def make_estimator(settings: Mapping, name: str = "estimator") -> LogDetEstimator:
  """The estimator ``settings['kind']`` (a key of ``iresflow.core.estimators.ESTIMATORS``) with its settings.

  A setting left None takes the estimator's own default: configs keep every estimator's settings as
  None placeholders, so that ``--config.estimator.kind=roulette --config.estimator.max_terms=50`` works
  from the command line. A set value must be a setting of the chosen kind.

  Raises:
    ConfigError: naming ``name.KEY`` for an unknown key, or a key of another kind that is set.
  """
  settings = dict(_plain(settings))
  kind = settings.pop("kind", None)
  if kind not in ESTIMATORS:
    raise ConfigError(f"{name}.kind: expected one of {sorted(ESTIMATORS)}, got {kind!r}")
  own = estimator_settings(kind)
  others = {key: other for other in ESTIMATORS for key in estimator_settings(other) if key not in own}
  unknown = sorted(key for key in settings if key not in own and key not in others)
  if unknown:
    raise ConfigError(f"{name}: unknown setting(s) {unknown} for kind {kind!r}; expected some of {sorted(own)}")
  misplaced = sorted(key for key in settings if key in others and settings[key] is not None)
  if misplaced:
    raise ConfigError(f"{name}: {misplaced} are not settings of kind {kind!r} (they belong to "
                     f"{sorted({others[key] for key in misplaced})}); leave them None, or choose that kind. "
                     f"Settings of {kind!r}: {sorted(own)}")
  return _construct(ESTIMATORS[kind], name,
                    **{key: value for key, value in settings.items() if key in own and value is not None})


def make_solver(settings: Mapping) -> FixedPointSolver:
  """A :class:`FixedPointSolver` from a dict of its fields."""
  return _construct(FixedPointSolver, "solver", **_fields(FixedPointSolver, _plain(settings), "solver"))


def build_model(config, data_shape: tuple[int, ...], num_classes: int) -> nn.Module:
  """The model named by ``config.task`` with ``config.model`` as keyword arguments.

  Args:
    config: needs ``task`` and ``model``.
    data_shape: per-example data shape.
    num_classes: number of label classes (classification and hybrid).
  """
  if config.task not in TASKS:
    raise ConfigError(f"config.task: expected one of {TASKS}, got {config.task!r}")
  kwargs = dict(_plain(config.model))
  cls = IResNetClassifier if config.task == "classification" else IResNetFlow
  known = {f.name for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")}
  settable = known - {"data_shape", "num_classes"}
  unknown = sorted(set(kwargs) - settable)
  if unknown:
    raise ConfigError(f"model: unknown setting(s) {unknown} for {cls.__name__}; expected some of {sorted(settable)}")
  for key in ("residual", "fc_residual"):
    if key in kwargs:
      kwargs[key] = residual_spec(kwargs[key])
  if isinstance(kwargs.get("forward_solver"), Mapping):
    kwargs["forward_solver"] = make_solver(kwargs["forward_solver"])
  data_shape = tuple(int(n) for n in data_shape)
  if config.task == "classification":
    kwargs["num_classes"] = num_classes
  elif config.task == "hybrid":
    kwargs["num_classes"] = num_classes
  if len(data_shape) == 1 and config.task != "classification":
    kwargs.setdefault("stages", ())
    kwargs.setdefault("initial_squeeze", False)
  model = _construct(cls, "model", data_shape=data_shape, **kwargs)
  try:
    model._check_config()  # the module's own checks run at init; here before any work
  except (ValueError, TypeError) as error:
    raise ConfigError(f"model: {error}") from error
  return model
