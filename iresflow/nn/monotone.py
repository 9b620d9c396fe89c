"""The Monotone Flow block: the Cayley transform ``F = 2 (I + g)^{-1} - I`` of a contraction ``g``.

Ahn, Kim and Park (NeurIPS 2022, "Invertible Monotone Operators for Normalizing Flows") replace the
i-ResNet block ``x + g(x)`` by a monotone operator. For ``Lip(g) = L < 1`` the map ``I + g`` is
invertible and ``F = 2 (I + g)^{-1} - I`` is the Cayley transform of ``g``; with ``u = (I + g)^{-1}(x)``

    F(x) = 2u - x = u - g(u),        F^{-1}(y) = u + g(u)  where  u - g(u) = y.

``F`` is monotone, ``<F(x) - F(x'), x - x'> >= 0``, and bi-Lipschitz with constants ``(1 + L)/(1 - L)``
both ways, where an i-ResNet block is limited to ``1 + L`` forward: the same ``g`` covers a wider
range of slopes. Both directions are a fixed-point solve (Algorithm 1 on ``g`` forward, on ``-g``
backward, both contractions), so the block reuses the core's solver, with its implicit gradient.

Its Jacobian is ``J_F = (I - J_g(u)) (I + J_g(u))^{-1}``, so

    ln det J_F(x) = ln det(I - J_g(u)) - ln det(I + J_g(u)) = -2 sum_{k odd} tr(J_g(u)^k) / k,

which every log-det estimator of the core computes with ``transform='cayley'`` (power series,
roulette, exact; :mod:`iresflow.core.logdet`). The certificate of ``g`` (``iresflow.certify``)
certifies the block: ``Lip(g) < 1`` makes both solves converge and ``F`` invertible.

The block has the contract of every invertible piece (see :mod:`iresflow.nn.block`). Its forward
pass needs a solve too, set by ``forward_solver``; examples whose forward solve did not converge get
NaN outputs and log-dets (so a training step stops rather than learn from them). Both solves' reports
are sown into ``'inverse_info'`` (``'forward_fixed_point'`` and ``'fixed_point'``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from iresflow.core import estimators as estimators_lib
from iresflow.core.fixed_point import FixedPointInfo, FixedPointSolver
from iresflow.nn.block import INVERSE_INFO, ContractiveBlock


def _nan_unless_converged(values: jax.Array, info: FixedPointInfo) -> jax.Array:
  converged = info.converged.reshape((-1,) + (1,) * (values.ndim - 1))
  return jnp.where(converged, values, jnp.asarray(jnp.nan, values.dtype))


class MonotoneBlock(ContractiveBlock):
  """``F(x) = 2 (I + g)^{-1}(x) - x`` with ``g`` described by ``spec`` (Ahn et al. 2022).

  Attributes:
    spec: the residual function ``g`` (``Lip(g) < 1``).
    forward_solver: the fixed-point solve of ``u + g(u) = x`` in the forward pass.
  """

  forward_solver: FixedPointSolver = FixedPointSolver()

  def _solve_forward(self, x: jax.Array, context: jax.Array | None):
    """``(u, g)`` with ``u + g(u) = x`` (implicitly differentiable); NaN where the solve did not converge."""
    g = self.residual_function(x.shape[1:], context)
    u, info = self.forward_solver(g, x)
    if not self.is_initializing():  # init would store it in the variables
      self.sow(INVERSE_INFO, "forward_fixed_point", info)
    return _nan_unless_converged(u, info), g

  def __call__(self, x: jax.Array, *, context: jax.Array | None = None) -> jax.Array:
    """``F(x) = u - g(u)`` with ``u = (I + g)^{-1}(x)``, for a batch ``x`` of shape ``(batch, ...)``."""
    u, g = self._solve_forward(x, context)
    return u - g(u)

  def forward_and_log_det(self, x: jax.Array, *, estimator: estimators_lib.LogDetEstimator,
                          context: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """``(F(x), ln det J_F(x))``: the log-det ``ln det(I - J_g(u)) - ln det(I + J_g(u))`` of shape ``(batch,)``."""
    estimators_lib.check_estimator(estimator)
    u, g = self._solve_forward(x, context)
    key = self.make_rng("logdet") if estimator.needs_key else None
    gu, logdet = estimator(key, g, u, transform="cayley")
    return u - gu, logdet

  def _solve_inverse(self, y: jax.Array, solver: FixedPointSolver, context: jax.Array | None):
    g = self.residual_function(y.shape[1:], context)
    u, info = solver(lambda z: -g(z), y)  # u - g(u) = y
    self.sow(INVERSE_INFO, "fixed_point", info)
    return u, g

  def inverse(self, y: jax.Array, *, solver: FixedPointSolver = FixedPointSolver(),
              context: jax.Array | None = None) -> jax.Array:
    """``F^{-1}(y) = u + g(u)`` with ``u - g(u) = y`` (Algorithm 1 on ``-g``); differentiable (implicitly)."""
    u, g = self._solve_inverse(y, solver, context)
    return u + g(u)

  def inverse_and_log_det(self, y: jax.Array, *, solver: FixedPointSolver = FixedPointSolver(),
                          estimator: estimators_lib.LogDetEstimator, context: jax.Array | None = None
                          ) -> tuple[jax.Array, jax.Array]:
    """``(x, -ln det J_F(x))`` with ``x = F^{-1}(y)``: the log-det of the inverse map at ``y``."""
    estimators_lib.check_estimator(estimator)
    u, g = self._solve_inverse(y, solver, context)
    key = self.make_rng("logdet") if estimator.needs_key else None
    gu, logdet = estimator(key, g, u, transform="cayley")
    return u + gu, -logdet
