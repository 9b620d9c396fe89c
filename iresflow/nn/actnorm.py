"""ActNorm (Kingma & Dhariwal 2018): a per-channel affine map initialised from the first batch.

``y = (x + bias) * exp(log_scale)`` over the last (channel) axis, with ``bias = -mean`` and
``log_scale = -log(std)`` of the batch seen at ``init``, so the first batch comes out with zero mean
and unit variance per channel. ``log|det| = (number of positions) * sum(log_scale)`` per example.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


class ActNorm(nn.Module):
  """Invertible per-channel affine normalisation with data-dependent initialisation.

  Attributes:
    eps: added to the initial standard deviation.
  """

  eps: float = 1e-6

  @nn.compact
  def _params(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    axes = tuple(range(x.ndim - 1))
    bias = self.param("bias", lambda _: -jnp.mean(x, axis=axes))
    log_scale = self.param("log_scale", lambda _: -jnp.log(jnp.std(x, axis=axes) + self.eps))
    return bias, log_scale

  def forward_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(y, log|det J|)`` for a batch ``x`` of shape ``(batch, ..., C)``; the log-det is ``(batch,)``."""
    bias, log_scale = self._params(x)
    positions = math.prod(x.shape[1:-1])
    logdet = jnp.full((x.shape[0],), positions * jnp.sum(log_scale), x.dtype)
    return (x + bias) * jnp.exp(log_scale), logdet

  def inverse(self, y: jax.Array) -> jax.Array:
    """``x`` with ``forward(x) = y``; needs initialised parameters."""
    bias, log_scale = self._params(y)
    return y * jnp.exp(-log_scale) - bias

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.forward_and_log_det(x)[0]
