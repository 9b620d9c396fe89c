"""A :class:`~iresflow.FlowDistribution` inside other JAX libraries: distrax and NumPyro.

* :func:`to_distrax` makes it a ``distrax.Distribution``, :func:`to_distrax_bijector` its map from
  base points to data a ``distrax.Bijector`` (it composes with ``distrax.Chain`` and
  ``distrax.Transformed``).
* :func:`to_numpyro` makes it a ``numpyro.distributions.Distribution``, usable as a prior or as a
  guide; :func:`numpyro_flow_param` registers its parameters as one NumPyro ``param`` site for SVI.

Install the optional extra: ``pip install "iresflow[interop]"`` (distrax, NumPyro). Nothing here is
imported by ``import iresflow``.
"""

import importlib

_EXPORTS = {
    "to_distrax": "distrax_adapter", "to_distrax_bijector": "distrax_adapter",
    "to_numpyro": "numpyro_adapter", "numpyro_flow_param": "numpyro_adapter",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
  if name in _EXPORTS:
    return getattr(importlib.import_module(f"iresflow.interop.{_EXPORTS[name]}"), name)
  raise AttributeError(f"module 'iresflow.interop' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + __all__)
