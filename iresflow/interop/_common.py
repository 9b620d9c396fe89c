"""What both adapters check: a key for random estimators, and a context that fits the distribution."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def check_key_and_context(dist, key, context, adapter: str):
  """Returns ``(key, context)`` as arrays (or None) after checking them against ``dist``."""
  from iresflow.distributions import FlowDistribution
  if not isinstance(dist, FlowDistribution):
    raise TypeError(f"dist: expected an iresflow.FlowDistribution, got {type(dist).__name__}")
  if dist.estimator.needs_key and key is None:
    raise ValueError(f"key: {adapter} has no key argument in log_prob, and the estimator "
                     f"{dist.estimator.describe()!r} is random; pass key= (every call then uses that one draw) or "
                     f"create the distribution with a deterministic estimator (ExactLogDet, PowerSeries)")
  if context is not None:
    context = jnp.asarray(context)
    if not dist.context_size or context.ndim < 1 or context.shape[-1] != dist.context_size:
      raise ValueError(f"context: expected shape (..., {dist.context_size}) for this distribution (context_size="
                       f"{dist.context_size}), got {tuple(context.shape)}")
  elif dist.context_size:
    raise ValueError(f"context: the distribution is conditional; {adapter} fixes one context, shape "
                     f"(..., {dist.context_size})")
  return key, context


def batch_shape_of(context: jax.Array | None) -> tuple[int, ...]:
  """The batch shape a fixed context gives the adapted distribution."""
  return () if context is None else tuple(context.shape[:-1])
