"""iresflow: invertible residual networks and Residual Flows in JAX/Flax.

Pure functions live in :mod:`iresflow.core`; Flax modules in :mod:`iresflow.nn` and
:mod:`iresflow.models`.
"""

from iresflow.certificate import Certificate, certify

__version__ = "0.1.0"
__all__ = ["Certificate", "certify", "__version__"]
