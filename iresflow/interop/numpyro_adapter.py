"""A :class:`~iresflow.FlowDistribution` as a ``numpyro.distributions.Distribution``: a prior or a guide.

As a guide for stochastic variational inference, create the distribution in the sampling direction
(``direction='sampling'``): NumPyro draws a sample and asks its log-density at once, and the adapter
returns the ``log q`` computed with the sample (passed as NumPyro's *intermediates*), so no fixed
point is solved. Register the flow's parameters with :func:`numpyro_flow_param` inside the guide::

    def guide(y):
      flow = numpyro_flow_param("flow", dist)
      numpyro.sample("theta", to_numpyro(flow))

SVI then trains them with its own optimizer. It does not carry the norm estimators' state, so the
distribution returned by :func:`numpyro_flow_param` estimates every layer's norm afresh at each call
(``fresh_norms=True``): ``Lip(g) < 1`` holds at every step.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpyro
from jax.flatten_util import ravel_pytree
from numpyro.distributions import constraints

from iresflow.interop._common import batch_shape_of, check_key_and_context


class FlowNumPyro(numpyro.distributions.Distribution):
  """A ``FlowDistribution`` as a NumPyro distribution (see :func:`to_numpyro`)."""

  pytree_data_fields = ("dist", "key", "context")
  reparametrized_params = []

  def __init__(self, dist, *, key: jax.Array | None = None, context: jax.Array | None = None,
               validate_args: bool | None = None):
    key, context = check_key_and_context(dist, key, context, "a NumPyro distribution")
    self.dist, self.key, self.context = dist, key, context
    super().__init__(batch_shape=batch_shape_of(context), event_shape=dist.event_shape,
                     validate_args=validate_args)

  @constraints.dependent_property(is_discrete=False, event_dim=None)
  def support(self):
    return constraints.independent(constraints.real, len(self.dist.event_shape))

  @property
  def has_rsample(self) -> bool:
    return True

  def sample_with_intermediates(self, key: jax.Array, sample_shape: tuple[int, ...] = ()):
    """Samples of shape ``sample_shape + batch_shape + event_shape`` and, as the intermediates, their ``log q``."""
    sample_shape = tuple(sample_shape)
    n = math.prod(sample_shape)
    x, log_prob = self.dist.sample_and_log_prob(key, max(n, 1), context=self.context)
    shape = sample_shape + self.batch_shape
    return x.reshape(shape + self.event_shape), [log_prob.reshape(shape)]

  def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
    sample_shape = tuple(sample_shape)
    x = self.dist.sample(key, max(math.prod(sample_shape), 1), context=self.context)
    return x.reshape(sample_shape + self.batch_shape + self.event_shape)

  def log_prob(self, value: jax.typing.ArrayLike, intermediates=None) -> jax.Array:
    """``log p(value)``; given the intermediates of :meth:`sample_with_intermediates`, the ``log q`` computed
    with that sample (no fixed point)."""
    if intermediates:
      return intermediates[0]
    return self.dist.log_prob(jnp.asarray(value), key=self.key, context=self.context)


def to_numpyro(dist, *, key: jax.Array | None = None, context: jax.typing.ArrayLike | None = None) -> FlowNumPyro:
  """``dist`` as a ``numpyro.distributions.Distribution`` (event shape ``dist.event_shape``).

  Args:
    dist: an ``iresflow.FlowDistribution`` (``direction='sampling'`` for a guide).
    key: with a random log-det estimator, the key every ``log_prob`` call uses; not needed for
      deterministic ones.
    context: a conditional distribution's context, ``(..., k)``, fixed for the adapter; its leading
      shape becomes the batch shape.
  """
  return FlowNumPyro(dist, key=key, context=context)


def numpyro_flow_param(name: str, dist):
  """Registers ``dist``'s parameters as the NumPyro ``param`` site ``name`` (one flat vector) and returns
  the distribution with the site's value, estimating norms afresh (``fresh_norms=True``).

  Call it inside a guide; SVI then optimises the site. ``numpyro_flow_param(name, dist)`` with the
  trained values (``svi_result.params[name]``) substituted gives the fitted distribution:
  ``numpyro.handlers.substitute(lambda: numpyro_flow_param(name, dist), params)()``.
  """
  flat, unravel = ravel_pytree(dist.variables["params"])
  value = numpyro.param(name, flat)
  return dist.replace(variables={**dist.variables, "params": unravel(value)}, fresh_norms=True)
