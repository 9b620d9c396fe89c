"""iresflow: invertible residual networks and their successors in JAX/Flax.

Pure functions live in :mod:`iresflow.core` (JAX only); Flax modules in :mod:`iresflow.nn` and
:mod:`iresflow.models`; :func:`certify` bounds every block's ``Lip(g)`` rigorously. Importing
``iresflow`` or ``iresflow.core`` loads neither Flax nor the training, data and plotting libraries:
``iresflow.certify`` and ``iresflow.Certificate`` are loaded on first use, as are the distribution
layer's :class:`~iresflow.distributions.FlowDistribution`, :func:`~iresflow.distributions.fit` and
:func:`~iresflow.distributions.fit_variational` (:mod:`iresflow.distributions`).
"""

__version__ = "0.1.0"
__all__ = ["Certificate", "FlowDistribution", "certify", "fit", "fit_variational", "__version__"]


def __getattr__(name: str):
  if name in ("Certificate", "certify"):
    from iresflow import certificate

    return getattr(certificate, name)
  if name in ("FlowDistribution", "fit", "fit_variational"):
    from iresflow import distributions

    return getattr(distributions, name)
  raise AttributeError(f"module 'iresflow' has no attribute {name!r}")
