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
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # parameters are float32 for any input
    bias = self.param("bias", lambda _: -jnp.mean(x32, axis=axes))
    log_scale = self.param("log_scale", lambda _: -jnp.log(jnp.std(x32, axis=axes) + self.eps))
    return bias, log_scale

  def forward_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(y, log|det J|)`` for a batch ``x`` of shape ``(batch, ..., C)``; the log-det is ``(batch,)``.

    ``y`` has ``x``'s dtype; the log-det is float32 (float64 for float64 ``x``).
    """
    bias, log_scale = self._params(x)
    positions = math.prod(x.shape[1:-1])
    logdet = jnp.full((x.shape[0],), positions * jnp.sum(log_scale), jnp.promote_types(x.dtype, jnp.float32))
    return ((x + bias.astype(x.dtype)) * jnp.exp(log_scale).astype(x.dtype)), logdet

  def inverse(self, y: jax.Array) -> jax.Array:
    """``x`` with ``forward(x) = y``, in ``y``'s dtype; needs initialised parameters."""
    bias, log_scale = self._params(y)
    return y * jnp.exp(-log_scale).astype(y.dtype) - bias.astype(y.dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.forward_and_log_det(x)[0]
