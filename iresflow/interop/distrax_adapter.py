"""A :class:`~iresflow.FlowDistribution` as a ``distrax.Distribution``, and its map as a ``distrax.Bijector``.

The bijector goes from base points (flat, ``(D,)``) to data (``event_shape``), distrax's convention
for ``distrax.Transformed(base, bijector)``: ``Transformed(MultivariateNormalDiag(0, 1),
to_distrax_bijector(dist))`` is the same distribution as ``dist`` (for a standard-normal prior).

Which way is cheap follows the distribution's ``direction``: with ``'density'`` the bijector's
``inverse_and_log_det`` (data to base) is one forward pass of the residual blocks and its
``forward_and_log_det`` solves a fixed point per block; ``'sampling'`` the other way round.
"""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp

from iresflow.interop._common import batch_shape_of, check_key_and_context


class FlowBijector(distrax.Bijector):
  """Base points ``(..., D)`` to data ``(..., *event_shape)`` (:func:`to_distrax_bijector`)."""

  def __init__(self, dist, *, key: jax.Array | None = None, context: jax.Array | None = None):
    key, context = check_key_and_context(dist, key, context, "a distrax bijector")
    super().__init__(event_ndims_in=1, event_ndims_out=len(dist.event_shape))
    self.dist, self.key, self.context = dist, key, context

  def forward_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self.dist.forward_and_log_det(x, key=self.key, context=self.context)

  def inverse_and_log_det(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self.dist.inverse_and_log_det(y, key=self.key, context=self.context)


class FlowDistrax(distrax.Distribution):
  """A ``FlowDistribution`` as a ``distrax.Distribution`` (see :func:`to_distrax`)."""

  def __init__(self, dist, *, key: jax.Array | None = None, context: jax.Array | None = None):
    key, context = check_key_and_context(dist, key, context, "a distrax distribution")
    self.dist, self.key, self.context = dist, key, context

  @property
  def event_shape(self) -> tuple[int, ...]:
    return self.dist.event_shape

  @property
  def batch_shape(self) -> tuple[int, ...]:
    return batch_shape_of(self.context)

  def _sample_n(self, key: jax.Array, n: int) -> jax.Array:
    return self.dist.sample(key, n, context=self.context)

  def _sample_n_and_log_prob(self, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    return self.dist.sample_and_log_prob(key, n, context=self.context)

  def log_prob(self, value: jax.typing.ArrayLike) -> jax.Array:
    return self.dist.log_prob(jnp.asarray(value), key=self.key, context=self.context)


def to_distrax(dist, *, key: jax.Array | None = None, context: jax.typing.ArrayLike | None = None) -> FlowDistrax:
  """``dist`` as a ``distrax.Distribution``: ``log_prob``, ``sample``, ``sample_and_log_prob``.

  Args:
    dist: an ``iresflow.FlowDistribution``.
    key: with a random log-det estimator (roulette, the default above 16 dimensions), the key every
      ``log_prob`` call uses (distrax's ``log_prob`` takes none); not needed for deterministic ones.
    context: a conditional distribution's context, ``(..., k)``, fixed for the adapter; its leading
      shape becomes the batch shape.
  """
  return FlowDistrax(dist, key=key, context=context)


def to_distrax_bijector(dist, *, key: jax.Array | None = None, context: jax.typing.ArrayLike | None = None
                        ) -> FlowBijector:
  """``dist``'s map from base points (``(D,)``) to data as a ``distrax.Bijector``; arguments as :func:`to_distrax`."""
  return FlowBijector(dist, key=key, context=context)
