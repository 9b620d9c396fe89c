"""Activations with Lipschitz constant <= 1 for residual functions ``g``.

Certificates multiply layer norms by the activations' Lipschitz constants, so each activation here
comes with its constant. The paper (Sec. 3.2, App. C.3) advises activations with a continuous
derivative (ELU, softplus) for the power-series log-det; Residual Flows (Chen et al. 2019, Sec. 4)
introduce LipSwish, ``x * sigmoid(beta x) / 1.1``, whose derivative is bounded by 1 for every
``beta >= 0``. ReLU is allowed but its derivative jumps, which makes the estimator's gradient noisy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def lipswish(x: jax.Array, beta: jax.typing.ArrayLike = 1.0) -> jax.Array:
  """LipSwish ``x * sigmoid(beta * x) / 1.1`` (Chen et al. 2019); 1-Lipschitz for ``beta >= 0``.

  Computed in ``x``'s dtype (``beta`` is cast to it).
  """
  x = jnp.asarray(x)
  return x * jax.nn.sigmoid(jnp.asarray(beta, x.dtype) * x) / jnp.asarray(1.1, x.dtype)


ACTIVATIONS = {
    "elu": jax.nn.elu,
    "softplus": jax.nn.softplus,
    "lipswish": lipswish,
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
}

# Upper bounds on the Lipschitz constants, used by certificates.
LIPSCHITZ_CONSTANTS = {"elu": 1.0, "softplus": 1.0, "lipswish": 1.0, "relu": 1.0, "tanh": 1.0}

# Activations with a learnable parameter: LipSwish's beta = softplus(raw), raw initialised to 0.5
# as in Residual Flows, so beta starts at ~0.97.
LEARNABLE = {"lipswish"}


def check_activation(name: str) -> None:
  """Raises ``ValueError`` naming the known activations unless ``name`` is one of them."""
  if name not in ACTIVATIONS:
    raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {name!r}")
