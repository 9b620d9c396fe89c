"""From a config to objects: the model, its residual specs, the log-det estimators and the solver.

Configs hold plain values (``ml_collections``), so that every setting can be overridden from the
command line; these functions turn them into the library's frozen settings objects, checked when
built.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn

from iresflow.core.estimators import ESTIMATORS, LogDetEstimator
from iresflow.core.fixed_point import FixedPointSolver
from iresflow.models import IResNetClassifier, IResNetFlow
from iresflow.nn.residual import ResidualSpec
from iresflow.nn.spectral import LipschitzConstraint

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


def _fields(cls, settings: Mapping, name: str) -> dict:
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(settings) - known)
  if unknown:
    raise ValueError(f"{name}: unknown setting(s) {unknown} for {cls.__name__}; expected some of {sorted(known)}")
  return dict(settings)


def residual_spec(settings: Mapping | ResidualSpec | None) -> ResidualSpec:
  """A :class:`ResidualSpec` from a dict of its fields (``constraint`` a dict of ``LipschitzConstraint`` fields)."""
  if isinstance(settings, ResidualSpec):
    return settings
  settings = dict(_plain(settings or {}))
  constraint = settings.pop("constraint", {})
  if not isinstance(constraint, LipschitzConstraint):
    constraint = LipschitzConstraint(**_fields(LipschitzConstraint, _plain(constraint), "residual.constraint"))
  return ResidualSpec(**_fields(ResidualSpec, settings, "residual"), constraint=constraint)


def make_estimator(settings: Mapping) -> LogDetEstimator:
  """The estimator named by ``settings['kind']`` with the settings it has (others are ignored)."""
  settings = dict(_plain(settings))
  kind = settings.pop("kind", None)
  if kind not in ESTIMATORS:
    raise ValueError(f"estimator.kind: expected one of {sorted(ESTIMATORS)}, got {kind!r}")
  cls = ESTIMATORS[kind]
  known = {f.name for f in dataclasses.fields(cls)}
  return cls(**{k: v for k, v in settings.items() if k in known})


def make_solver(settings: Mapping) -> FixedPointSolver:
  """A :class:`FixedPointSolver` from a dict of its fields."""
  return FixedPointSolver(**_fields(FixedPointSolver, _plain(settings), "solver"))


def build_model(config, data_shape: tuple[int, ...], num_classes: int) -> nn.Module:
  """The model named by ``config.task`` with ``config.model`` as keyword arguments.

  Args:
    config: needs ``task`` and ``model``.
    data_shape: per-example data shape.
    num_classes: number of label classes (classification and hybrid).
  """
  if config.task not in TASKS:
    raise ValueError(f"config.task: expected one of {TASKS}, got {config.task!r}")
  kwargs = dict(_plain(config.model))
  for key in ("residual", "fc_residual"):
    if key in kwargs:
      kwargs[key] = residual_spec(kwargs[key])
  if isinstance(kwargs.get("forward_solver"), Mapping):
    kwargs["forward_solver"] = make_solver(kwargs["forward_solver"])
  data_shape = tuple(int(n) for n in data_shape)
  if config.task == "classification":
    return IResNetClassifier(data_shape=data_shape, num_classes=num_classes, **kwargs)
  if config.task == "hybrid":
    kwargs["num_classes"] = num_classes
  if len(data_shape) == 1:
    kwargs.setdefault("stages", ())
    kwargs.setdefault("initial_squeeze", False)
  return IResNetFlow(data_shape=data_shape, **kwargs)
