"""ActNorm (Kingma & Dhariwal 2018): a per-channel affine map initialised from the first batch.

``y = (x + bias) * exp(log_scale)`` over the last (channel) axis, with ``bias = -mean`` and
``log_scale = -log(std)`` of the batch seen at ``init``, so the first batch comes out with zero mean
and unit variance per channel. ``log|det| = (number of positions) * sum(log_scale)`` per example.

It has the contract of every invertible piece (:mod:`iresflow.nn.invertible`); its log-det is exact
and its inverse closed-form, so it takes no estimator and no solver.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from iresflow.core.logdet import accumulation_dtype


class ActNorm(nn.Module):
  """Invertible per-channel affine normalisation with data-dependent initialisation.

  Parameters are float32 whatever the input's dtype; outputs keep the input's dtype.

  Attributes:
    eps: added to the initial standard deviation.
  """

  eps: float = 1e-6

  @nn.compact
  def _params(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    axes = tuple(range(x.ndim - 1))
    x32 = x.astype(accumulation_dtype(x.dtype))
    bias = self.param("bias", lambda _: -jnp.mean(x32, axis=axes))
    log_scale = self.param("log_scale", lambda _: -jnp.log(jnp.std(x32, axis=axes) + self.eps))
    return bias, log_scale

  def _log_det(self, x: jax.Array, log_scale: jax.Array) -> jax.Array:
    positions = math.prod(x.shape[1:-1])
    return jnp.full((x.shape[0],), positions * jnp.sum(log_scale), accumulation_dtype(x.dtype))

  def __call__(self, x: jax.Array) -> jax.Array:
    """``y`` for a batch ``x`` of shape ``(batch, ..., C)``."""
    bias, log_scale = self._params(x)
    return (x + bias.astype(x.dtype)) * jnp.exp(log_scale).astype(x.dtype)

  def forward_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(y, log|det J|)``; the log-det is ``(batch,)``, float32 (exact)."""
    _, log_scale = self._params(x)
    return self(x), self._log_det(x, log_scale)

  def inverse(self, y: jax.Array) -> jax.Array:
    """``x`` with ``ActNorm(x) = y``, in ``y``'s dtype (closed form)."""
    bias, log_scale = self._params(y)
    return y * jnp.exp(-log_scale).astype(y.dtype) - bias.astype(y.dtype)

  def inverse_and_log_det(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(x, -log|det J|)``."""
    _, log_scale = self._params(y)
    return self.inverse(y), -self._log_det(y, log_scale)
