"""Activations with Lipschitz constant <= 1 for residual functions ``g``.

Certificates multiply layer norms by the activations' Lipschitz constants, so each activation here
comes with its constant. The paper (Sec. 3.2, App. C.3) advises activations with a continuous
derivative (ELU, softplus) for the power-series log-det; Residual Flows (Chen et al. 2019, Sec. 4)
introduce LipSwish, ``x * sigmoid(beta x) / 1.1``, whose derivative is bounded by 1 for every
``beta >= 0``. ReLU is allowed but its derivative jumps, which makes the estimator's gradient noisy.

i-DenseNets (Perugachi-Diaz et al. 2021, Sec. 3.3) add CLipSwish, LipSwish of the concatenation
``[x, -x]``: it doubles the last axis and keeps information that LipSwish alone squashes for negative
inputs. Its Lipschitz constant is not 1; :func:`clipswish_lipschitz_constant` computes it, and
:func:`clipswish` divides by it.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def lipswish(x: jax.Array, beta: jax.typing.ArrayLike = 1.0) -> jax.Array:
  """LipSwish ``x * sigmoid(beta * x) / 1.1`` (Chen et al. 2019); 1-Lipschitz for ``beta >= 0``.

  Computed in ``x``'s dtype (``beta`` is cast to it).
  """
  x = jnp.asarray(x)
  return x * jax.nn.sigmoid(jnp.asarray(beta, x.dtype) * x) / jnp.asarray(1.1, x.dtype)


def clipswish_lipschitz_constant() -> float:
  """The Lipschitz constant (2-norm) of ``x -> [lipswish(x), lipswish(-x)]``, for every ``beta > 0``.

  The map acts elementwise, so its Jacobian is ``[diag(a); -diag(b)]`` with ``a = s'(t)``,
  ``b = s'(-t)`` at ``t = beta x``, where ``s(t) = t sigmoid(t) / 1.1`` up to the factor ``1/beta``
  that the chain rule cancels. Its norm is ``max_i sqrt(a_i^2 + b_i^2)``. With
  ``1.1 a(t) = sigmoid(t) + t sigmoid(t) (1 - sigmoid(t))`` one has ``1.1 b(t) = 1 - 1.1 a(t)``, so
  ``sqrt(a^2 + b^2)`` grows with ``|1.1 a - 1/2|`` and is largest where ``a`` is (or, by symmetry,
  smallest): at ``a'(t) = 0``, i.e. ``t tanh(t / 2) = 2``, solved here by Newton's method in float64.
  The result is independent of ``beta`` and close to the 1.004 that Perugachi-Diaz et al. state.

  Returns:
    The constant as a Python float, rounded up to the next float32 so that dividing by it in
    float32 cannot leave a constant above 1.
  """
  t = 2.4
  for _ in range(50):  # Newton on f(t) = t tanh(t/2) - 2, f' = tanh(t/2) + t / (2 cosh^2(t/2))
    tanh = math.tanh(t / 2)
    t -= (t * tanh - 2) / (tanh + t * (1 - tanh * tanh) / 2)
  sigmoid = 1 / (1 + math.exp(-t))
  a = sigmoid + t * sigmoid * (1 - sigmoid)
  constant = math.hypot(a, 1 - a) / 1.1
  as_float32 = jnp.float32(constant)
  return float(jnp.nextafter(as_float32, jnp.float32(2.0)) if float(as_float32) < constant else as_float32)


CLIPSWISH_LIPSCHITZ = clipswish_lipschitz_constant()


def clipswish(x: jax.Array, beta: jax.typing.ArrayLike = 1.0) -> jax.Array:
  """CLipSwish ``[lipswish(x), lipswish(-x)] / L`` along the last axis (i-DenseNets); 1-Lipschitz.

  ``L`` is :func:`clipswish_lipschitz_constant`. The output has twice ``x``'s last dimension.
  """
  x = jnp.asarray(x)
  both = jnp.concatenate([x, -x], axis=-1)
  return lipswish(both, beta) / jnp.asarray(CLIPSWISH_LIPSCHITZ, x.dtype)


ACTIVATIONS = {
    "elu": jax.nn.elu,
    "softplus": jax.nn.softplus,
    "lipswish": lipswish,
    "clipswish": clipswish,
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
}

# Upper bounds on the Lipschitz constants, used by certificates.
LIPSCHITZ_CONSTANTS = {"elu": 1.0, "softplus": 1.0, "lipswish": 1.0, "clipswish": 1.0, "relu": 1.0, "tanh": 1.0}

# How many times the activation multiplies the last axis (CLipSwish concatenates [x, -x]).
WIDTH_FACTORS = {"clipswish": 2}

# Activations with a learnable parameter: (C)LipSwish's beta = softplus(raw), raw initialised to 0.5
# as in Residual Flows, so beta starts at ~0.97.
LEARNABLE = {"lipswish", "clipswish"}


def width_factor(name: str) -> int:
  """How many times activation ``name`` multiplies the size of the last axis (2 for CLipSwish, else 1)."""
  return WIDTH_FACTORS.get(name, 1)


def check_activation(name: str) -> None:
  """Raises ``ValueError`` naming the known activations unless ``name`` is one of them."""
  if name not in ACTIVATIONS:
    raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {name!r}")
