"""The i-ResNet block ``F(x) = x + g(x)`` with ``Lip(g) < 1``: forward with log-det, and inverse.

The block holds ``g``'s parameters (:class:`~iresflow.nn.residual.ContractiveResidual`, described by a
:class:`~iresflow.nn.residual.ResidualSpec`) and calls the core: an estimator of ``log det(I + J_g)``
(:mod:`iresflow.core.estimators`: ``ExactLogDet``, ``PowerSeries`` (Algorithm 2), ``Roulette``) and the
fixed-point solver (:class:`~iresflow.core.fixed_point.FixedPointSolver`, Algorithm 1) for the inverse.

Like every invertible piece of iresflow (:mod:`iresflow.nn.invertible`) it offers

* ``__call__(x)`` -> ``y``, and ``forward_and_log_det(x, *, estimator)`` -> ``(y, log det J_F(x))``;
* ``inverse(y, *, solver)`` -> ``x``, and ``inverse_and_log_det(y, *, solver, estimator)`` ->
  ``(x, log det J_{F^-1}(y))`` ``= -log det J_F(x)`` at the solution ``x``.

Conditional flows pass a context ``c`` of shape ``(batch, k)`` to every method (``context=``); the
block is then ``F(x; c) = x + g(x, c)``, invertible in ``x`` for every ``c`` (see
:mod:`iresflow.nn.residual`), and its log-det is ``log det J_F`` in ``x`` at fixed ``c``.

The estimator and the solver are chosen per call, so one set of variables trains with a cheap
estimator and evaluates with an exact or unbiased one. Estimators that sample draw from the
``'logdet'`` RNG stream (``rngs={'logdet': key}``).

The solver's per-example report (:class:`~iresflow.core.fixed_point.FixedPointInfo`: iterations,
residual, converged) is sown into the ``'inverse_info'`` collection: apply with
``mutable=['inverse_info']`` and read it with :func:`inverse_info`, which merges the reports of every
block of a model.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from iresflow.core import estimators as estimators_lib
from iresflow.core.fixed_point import FixedPointInfo, FixedPointSolver, merge_infos
from iresflow.nn.residual import ContractiveResidual, ResidualFn, ResidualSpec
from iresflow.nn.spectral import NormalizedWeights

INVERSE_INFO = "inverse_info"


def inverse_info(state: Mapping) -> FixedPointInfo:
  """Merges the solver reports sown by every block into one per-example :class:`FixedPointInfo`.

  Args:
    state: the mutable state returned by ``apply(..., mutable=['inverse_info'])`` (or its
      ``'inverse_info'`` entry).

  Returns:
    Per example: iterations summed over blocks, the worst residual of any block, and whether every
    block converged.
  """
  tree = state.get(INVERSE_INFO, state) if isinstance(state, Mapping) else state
  infos = [leaf for leaf in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, FixedPointInfo))
           if isinstance(leaf, FixedPointInfo)]
  if not infos:
    raise ValueError("state: no solver reports in it; apply the inverse with mutable=['inverse_info']")
  flat = [FixedPointInfo(*(field.reshape((-1, field.shape[-1])) for field in info)) for info in infos]
  return merge_infos(FixedPointInfo(*(jnp.concatenate(fields, axis=0) for fields in zip(*flat))))


def _check_estimator(estimator) -> None:
  estimators_lib.check_estimator(estimator)


class ContractiveBlock(nn.Module):
  """What every block built on a contraction ``g`` has: ``g``'s parameters and views of ``g``.

  :class:`IResNetBlock` (``x + g(x)``) and ``iresflow.nn.MonotoneBlock`` (the Cayley transform of
  ``g``) derive from it; certificates and block views only use what is defined here.

  Attributes:
    spec: the residual function (width, layers, activation, Lipschitz constraint).
  """

  spec: ResidualSpec = ResidualSpec()

  def setup(self):
    self.g = ContractiveResidual(self.spec)

  def residual_function(self, input_shape: Sequence[int], context: jax.Array | None = None) -> ResidualFn:
    """``g`` (``g(., c)`` given a context ``(batch, k)``) as a pure function of a batch, closed over the
    normalised weights (see ``ContractiveResidual``)."""
    return self.g.residual_function(input_shape, context)

  def residual(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
    """``g(x)`` for a batch ``x``: ``block.apply(variables, x, method=IResNetBlock.residual)`` is ``g`` as a
    pure function of ``(variables, x)``."""
    return self.g(x, context)

  def normalized_layers(self, input_shape: Sequence[int]) -> tuple[NormalizedWeights, ...]:
    """The layers of ``g`` as it uses them (after eq. 2), for certificates."""
    return self.g.normalized_layers(input_shape)

  def concat_weights(self, input_shape: Sequence[int]) -> tuple[jax.Array, ...]:
    """A DenseNet ``g``'s concatenation weights ``(eta_1, eta_2)`` per layer, for certificates; ``()`` otherwise."""
    return self.g.concat_weights(input_shape)


class IResNetBlock(ContractiveBlock):
  """``F(x) = x + g(x)`` with ``g`` described by ``spec``.

  Attributes:
    spec: the residual function (width, layers, activation, Lipschitz constraint).
  """

  def __call__(self, x: jax.Array, *, context: jax.Array | None = None) -> jax.Array:
    """``F(x) = x + g(x)`` for a batch ``x`` of shape ``(batch, ...)``."""
    return x + self.residual(x, context)

  def forward_and_log_det(self, x: jax.Array, *, estimator: estimators_lib.LogDetEstimator,
                          context: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """``(F(x), log det J_F(x))``: ``x`` of shape ``(batch, ...)``, the log-det ``(batch,)`` (float32)."""
    _check_estimator(estimator)
    g = self.residual_function(x.shape[1:], context)
    key = self.make_rng("logdet") if estimator.needs_key else None
    gx, logdet = estimator(key, g, x)
    return x + gx, logdet

  def inverse(self, y: jax.Array, *, solver: FixedPointSolver = FixedPointSolver(),
              context: jax.Array | None = None) -> jax.Array:
    """``F^{-1}(y)`` by Algorithm 1; the per-example report is sown into ``'inverse_info'``.

    Differentiable (implicit differentiation): gradients flow to ``y`` and to the parameters.
    """
    x, info = solver(self.residual_function(y.shape[1:], context), y)
    self.sow(INVERSE_INFO, "fixed_point", info)
    return x

  def inverse_and_log_det(self, y: jax.Array, *, solver: FixedPointSolver = FixedPointSolver(),
                          estimator: estimators_lib.LogDetEstimator, context: jax.Array | None = None
                          ) -> tuple[jax.Array, jax.Array]:
    """``(x, -log det J_F(x))`` with ``x = F^{-1}(y)``: the log-det of the inverse map at ``y``."""
    _check_estimator(estimator)
    x = self.inverse(y, solver=solver, context=context)
    _, logdet = self.forward_and_log_det(x, estimator=estimator, context=context)
    return x, -logdet
