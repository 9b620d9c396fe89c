"""Flows as distributions: :class:`FlowDistribution`, :func:`fit` to data and :func:`fit_variational`.

A layer on top of the models for users who want a distribution rather than Flax modules: a pytree
value with ``log_prob``, ``sample``, ``sample_and_log_prob`` and the bijector's
``forward_and_log_det`` / ``inverse_and_log_det``, fitted in one call. ``fit`` and
``fit_variational`` need the ``train`` extra (optax, tqdm).
"""

import importlib

_EXPORTS = {
    "FlowDistribution": "flow_distribution", "default_estimator": "flow_distribution",
    "fit": "fitting", "fit_variational": "fitting",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
  if name in _EXPORTS:
    return getattr(importlib.import_module(f"iresflow.distributions.{_EXPORTS[name]}"), name)
  raise AttributeError(f"module 'iresflow.distributions' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + __all__)
