"""Preprocessing for density estimation and the bits/dim that stays honest about it.

Discrete data ``k in {0, ..., L-1}`` (``L = 256`` for 8-bit images, 17 for scikit-learn's digits)
become continuous by uniform dequantisation ``x = (k + u) / L``, ``u ~ U[0, 1)`` (Theis et al. 2016);
then ``log P(k) >= E_u[log p(x)] - D ln L``, so

    bits/dim = -(log p(x) - D ln L) / (D ln 2)

is an upper bound on the discrete model's code length. An optional logit transform
``y = logit(alpha + (1 - 2 alpha) x)`` (Dinh et al. 2017; alpha = 1e-6 for MNIST, 0.05 for CIFAR)
adds its own log-det, which :func:`logit_transform` returns so it is never left out.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def dequantize(key: jax.Array, k: jax.typing.ArrayLike, num_levels: int) -> jax.Array:
  """Uniform dequantisation ``(k + u) / num_levels`` of integer data into ``[0, 1)``, float32."""
  k = jnp.asarray(k, jnp.float32)
  return (k + jax.random.uniform(key, k.shape)) / num_levels


def logit_transform(x: jax.Array, alpha: float) -> tuple[jax.Array, jax.Array]:
  """``y = logit(alpha + (1 - 2 alpha) x)`` and its per-example ``log|det dy/dx|``.

  Args:
    x: data in ``[0, 1]``, shape ``(batch, ...)``.
    alpha: squeeze from the boundaries, in ``[0, 0.5)``.

  Returns:
    ``(y, logdet)`` with ``logdet`` of shape ``(batch,)``.
  """
  if not 0.0 <= alpha < 0.5:
    raise ValueError(f"alpha: expected a value in [0, 0.5), got {alpha}")
  s = alpha + (1 - 2 * alpha) * x
  y = jnp.log(s) - jnp.log1p(-s)
  logdet = jnp.sum(math.log(1 - 2 * alpha) - jnp.log(s) - jnp.log1p(-s), axis=tuple(range(1, x.ndim)))
  return y, logdet


def inverse_logit_transform(y: jax.Array, alpha: float) -> jax.Array:
  """Inverse of :func:`logit_transform`: back to ``[0, 1]``."""
  return (jax.nn.sigmoid(y) - alpha) / (1 - 2 * alpha)


def bits_per_dim(log_prob: jax.Array, dim: int, num_levels: int) -> jax.Array:
  """Bits per dimension of discrete data with ``num_levels`` levels, from ``log p`` of ``x in [0,1)^D``.

  Args:
    log_prob: per-example log density (nats) of the dequantised data scaled to ``[0, 1)``,
      including every preprocessing log-det.
    dim: ``D``, the number of dimensions per example.
    num_levels: ``L``, levels of the discrete data.
  """
  return -(log_prob - dim * math.log(num_levels)) / (dim * math.log(2.0))
