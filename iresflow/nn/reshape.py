"""Volume-preserving reshapes: squeeze (space-to-depth) and injective channel padding.

Both are linear isometries (permutations, or zero-padding), so their log-det is 0. :class:`Squeeze`
wraps the functions in the contract of every invertible piece (see ``iresflow.nn.block``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from iresflow.core.logdet import accumulation_dtype


def squeeze(x: jax.Array, factor: int = 2) -> jax.Array:
  """Space-to-depth: ``(B, H, W, C) -> (B, H/f, W/f, C f^2)``, invertible (Dinh et al. 2017).

  Raises:
    ValueError: if ``H`` or ``W`` is not divisible by ``factor``.
  """
  b, h, w, c = x.shape
  if h % factor or w % factor:
    raise ValueError(f"squeeze: spatial size {(h, w)} is not divisible by the factor {factor}")
  x = x.reshape(b, h // factor, factor, w // factor, factor, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h // factor, w // factor, c * factor * factor)


def unsqueeze(x: jax.Array, factor: int = 2) -> jax.Array:
  """Depth-to-space, the inverse of :func:`squeeze`: ``(B, H, W, C f^2) -> (B, H f, W f, C)``."""
  b, h, w, c = x.shape
  if c % (factor * factor):
    raise ValueError(f"unsqueeze: channels {c} are not divisible by {factor * factor}")
  x = x.reshape(b, h, w, factor, factor, c // (factor * factor))
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h * factor, w * factor, c // (factor * factor))


def injective_pad(x: jax.Array, n_channels: int) -> jax.Array:
  """Appends ``n_channels`` zero channels: an injective (not bijective) embedding (i-ResNet Sec. 5)."""
  if n_channels < 0:
    raise ValueError(f"n_channels: expected a non-negative integer, got {n_channels}")
  return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n_channels)])


class Squeeze(nn.Module):
  """:func:`squeeze` as an invertible piece (:mod:`iresflow.nn.invertible`): a permutation, log-det 0.

  Attributes:
    factor: spatial factor ``f``.
  """

  factor: int = 2

  def __call__(self, x: jax.Array) -> jax.Array:
    return squeeze(x, self.factor)

  def forward_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return squeeze(x, self.factor), jnp.zeros((x.shape[0],), accumulation_dtype(x.dtype))

  def inverse(self, y: jax.Array) -> jax.Array:
    return unsqueeze(y, self.factor)

  def inverse_and_log_det(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    return unsqueeze(y, self.factor), jnp.zeros((y.shape[0],), accumulation_dtype(y.dtype))
