"""Inverting a residual block ``y = x + g(x)`` by fixed-point iteration (Algorithm 1).

With ``Lip(g) = L < 1`` the map ``x -> y - g(x)`` is a contraction, so the iteration
``x_{k+1} = y - g(x_k)`` from ``x_0 = y`` converges to the unique inverse, and by Banach's theorem
(eq. (1) of Behrmann et al. 2019)

    ||x - x_n|| <= L^n / (1 - L) * ||x_1 - x_0||.

Unlike the reference code, which runs a fixed number of iterations and never checks, the loop here
stops per example when the residual ``||x_k + g(x_k) - y||_inf`` is below ``atol + rtol * ||y||_inf``,
and reports for every example whether it got there.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from iresflow.core import precision as precision_lib, validation


class FixedPointInfo(NamedTuple):
  """Per-example record of a fixed-point solve; every field has shape ``(batch,)``.

  Attributes:
    iterations: number of updates ``x_{k+1} = y - g(x_k)`` applied to the example.
    residual: ``max |x + g(x) - y|`` at the returned ``x`` (exact, not an estimate).
    converged: ``residual <= atol + rtol * max |y|``.
  """
  iterations: jax.Array
  residual: jax.Array
  converged: jax.Array


def _per_example_max_abs(x: jax.Array) -> jax.Array:
  """``max |x|`` per example, in float32 (float64 for float64 inputs) whatever ``x``'s dtype."""
  return jnp.max(jnp.abs(x.reshape(x.shape[0], -1)), axis=1).astype(jnp.promote_types(x.dtype, jnp.float32))


def _solve(g, y, atol, rtol, max_iters, resolution_floor=0.0) -> tuple[jax.Array, FixedPointInfo]:
  """The loop of Algorithm 1: ``x_{k+1} = y - g(x_k)`` from ``x_0 = y``, stopping per example.

  The tolerance is ``max(atol + rtol * max|y|, resolution_floor * max|y|)`` per example.
  """
  batch_shape = (y.shape[0],) + (1,) * (y.ndim - 1)
  scale = _per_example_max_abs(y)
  tolerance = jnp.maximum(atol + rtol * scale, resolution_floor * scale)

  def residual_of(x, gx):
    return _per_example_max_abs(x + gx - y)

  def cond(state):
    iteration, _, _, residual, _ = state
    return jnp.logical_and(iteration < max_iters, jnp.any(residual > tolerance))

  def body(state):
    iteration, x, gx, residual, iterations = state
    active = residual > tolerance
    x_next = y - gx
    gx_next = g(x_next)
    keep = active.reshape(batch_shape)
    x = jnp.where(keep, x_next, x)
    gx = jnp.where(keep, gx_next, gx)
    residual = jnp.where(active, residual_of(x_next, gx_next), residual)
    return iteration + 1, x, gx, residual, iterations + active.astype(jnp.int32)

  gy = g(y)
  init = (jnp.asarray(0, jnp.int32), y, gy, residual_of(y, gy), jnp.zeros(y.shape[0], jnp.int32))
  _, x, _, residual, iterations = jax.lax.while_loop(cond, body, init)
  return x, FixedPointInfo(iterations, residual, residual <= tolerance)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _implicit_solve(g_with_consts, options, y, consts):
  atol, rtol, max_iters, _ = options
  return _solve(lambda x: g_with_consts(x, *consts), y, atol, rtol, max_iters)


def _implicit_solve_fwd(g_with_consts, options, y, consts):
  x, info = _implicit_solve(g_with_consts, options, y, consts)
  return (x, info), (x, consts)


def _implicit_solve_bwd(g_with_consts, options, residuals, cotangents):
  """Implicit function theorem at ``x + g(x) = y``: ``a^T (I + J_g) = x_bar^T``, solved by ``a = x_bar - J_g^T a``.

  Then ``y_bar = a`` and the parameters of ``g`` get ``-a^T dg/dtheta``. The adjoint iteration is a
  contraction with the same ``Lip(g) < 1``, so it converges like the forward one; it uses the same
  tolerances, but never below the resolution of the cotangent's dtype (``4 eps max|x_bar|``): the
  cotangent's scale is the loss's, not the data's, and an absolute tolerance far below its rounding
  error cannot be met. Where the adjoint does not reach the tolerance within ``max_iters``,
  ``adjoint_failure='nan'`` sets that example's ``a`` to NaN, so the example's input gradient and
  every parameter gradient are NaN.
  """
  x, consts = residuals
  x_bar = cotangents[0]
  _, vjp_x = jax.vjp(lambda x: g_with_consts(x, *consts), x)
  atol, rtol, max_iters, adjoint_failure = options
  adjoint_g = lambda a: vjp_x(a)[0]
  floor = 4 * float(jnp.finfo(x_bar.dtype).eps)
  a, adjoint_info = _solve(adjoint_g, x_bar, atol, rtol, max_iters, resolution_floor=floor)
  if adjoint_failure == "nan":
    failed = jnp.logical_not(adjoint_info.converged).reshape((-1,) + (1,) * (a.ndim - 1))
    a = jnp.where(failed, jnp.asarray(jnp.nan, a.dtype), a)
  _, vjp_consts = jax.vjp(lambda c: g_with_consts(x, *c), consts)
  (consts_bar,) = vjp_consts(-a)
  return a, consts_bar


_implicit_solve.defvjp(_implicit_solve_fwd, _implicit_solve_bwd)


def fixed_point_inverse(
    g: Callable[[jax.Array], jax.Array],
    y: jax.typing.ArrayLike,
    *,
    atol: float = 1e-6,
    rtol: float = 1e-6,
    max_iters: int = 200,
    precision: str | None = "highest",
    adjoint_failure: str = "nan",
) -> tuple[jax.Array, FixedPointInfo]:
  """Solves ``x + g(x) = y`` for ``x`` by the fixed-point iteration of Algorithm 1.

  The loop is a ``lax.while_loop`` (jittable, vmappable) that ends when every example has converged
  or after ``max_iters`` updates. A converged example is frozen: its result does not depend on the
  other examples in the batch (as long as ``g`` acts on each example separately). Examples that did
  not converge are returned as they are and flagged in ``info.converged``; nothing is hidden.

  Each iteration costs one evaluation of ``g`` on the batch; the residual is computed from that same
  evaluation, so the reported ``residual`` is exact for the returned ``x``. ``g`` runs with its
  matmuls and convolutions at ``precision`` (default ``'highest'``): with JAX's default TensorFloat-32
  on a GPU, or bfloat16 on a TPU, ``g`` carries errors of ~1e-4 relative, and the residual of some
  examples stalls above tolerances like 1e-5 (see :mod:`iresflow.core.precision`).

  Differentiable by implicit differentiation (``jax.custom_vjp``), never by backpropagating through
  the loop: the gradient with respect to ``y`` and to whatever ``g`` closes over (its parameters)
  solves the adjoint fixed point ``a = x_bar - J_g(x)^T a`` with the same tolerances (floored at the
  float resolution of ``x_bar``, whose scale is the loss's, not the data's). This allows
  training through the inverse (sampling direction) and solving inverse problems. The backward
  pass has no ``info`` to return: an example whose adjoint solve does not converge within
  ``max_iters`` (its cotangent is large against ``atol``, or ``g`` is barely contractive) would get
  a silently wrong gradient, so by default (``adjoint_failure='nan'``) its input gradient and every
  parameter gradient become NaN, which a training loop's finiteness check catches. The gradient of
  an example whose *forward* solve did not converge is taken at a point that is not the inverse;
  ``info.converged`` of the forward call says which.

  Args:
    g: the residual function, mapping a batch ``(batch, ...)`` to the same shape, contractive.
    y: block outputs, shape ``(batch, ...)``, floating point.
    atol: absolute tolerance on the per-example max-abs residual.
    rtol: tolerance relative to the per-example ``max |y|``.
    max_iters: maximum number of updates (>= 0).
    precision: matmul precision of ``g`` inside the solve (see ``jax.default_matmul_precision``);
      None keeps the ambient default.
    adjoint_failure: what the implicit gradient does for an example whose adjoint solve did not
      converge: ``'nan'`` (its gradients become NaN) or ``'ignore'`` (keep the last iterate).

  Returns:
    ``(x, info)``: ``x`` of ``y``'s shape and dtype, and a :class:`FixedPointInfo` (``residual`` in
    float32, or float64 for float64 ``y``). The iteration runs in ``y``'s dtype: for bfloat16, whose
    resolution is ``2^-8`` relative, use ``rtol`` of about 1e-2, or solve in float32.
  """
  y = jnp.asarray(y)
  validation.check_min_rank(y, 1, "y", " with a leading batch axis")
  validation.check_floating(y, "y")
  validation.check_nonnegative(atol, "atol")
  validation.check_nonnegative(rtol, "rtol")
  validation.check_nonnegative_int(max_iters, "max_iters")
  check_adjoint_failure(adjoint_failure)
  g = precision_lib.with_matmul_precision(g, precision)
  g_with_consts, consts = jax.closure_convert(g, y)
  options = (float(atol), float(rtol), int(max_iters), adjoint_failure)
  return _implicit_solve(g_with_consts, options, y, tuple(consts))


ADJOINT_FAILURES = ("nan", "ignore")


def check_adjoint_failure(adjoint_failure) -> None:
  """Raises ``ValueError`` unless ``adjoint_failure`` is one of :data:`ADJOINT_FAILURES`."""
  if adjoint_failure not in ADJOINT_FAILURES:
    raise ValueError(f"adjoint_failure: expected one of {ADJOINT_FAILURES}, got {adjoint_failure!r}")


def banach_iterations(lipschitz: float, first_step: float, tolerance: float) -> int:
  """Iterations after which eq. (1) guarantees ``||x - x_n|| <= tolerance``.

  The smallest ``n`` with ``L^n / (1 - L) * ||x_1 - x_0|| <= tolerance``.

  Args:
    lipschitz: ``L = Lip(g)`` in ``[0, 1)``.
    first_step: ``||x_1 - x_0||_2 = ||g(y)||_2`` for the start ``x_0 = y``.
    tolerance: target error ``> 0``.

  Returns:
    The iteration count as a Python int (0 if the start is already within tolerance).
  """
  if not 0.0 <= lipschitz < 1.0:
    raise ValueError(f"lipschitz: expected a value in [0, 1), got {lipschitz}")
  if tolerance <= 0:
    raise ValueError(f"tolerance: expected a positive number, got {tolerance}")
  bound_at_zero = first_step / (1.0 - lipschitz)
  if bound_at_zero <= tolerance:
    return 0
  if lipschitz == 0.0:
    return 1
  return max(0, math.ceil(math.log(tolerance / bound_at_zero) / math.log(lipschitz)))


@dataclasses.dataclass(frozen=True)
class FixedPointSolver:
  """The settings of :func:`fixed_point_inverse` as one frozen, hashable object: ``solver(g, y) -> (x, info)``.

  Every invertible piece's ``inverse(y, *, solver=...)`` takes one, so the stopping rule is chosen
  per call (e.g. loose for sampling during training, tight for a reconstruction test).

  Attributes:
    atol: absolute tolerance on the per-example max-abs residual ``|x + g(x) - y|``.
    rtol: tolerance relative to the per-example ``max |y|``.
    max_iters: maximum number of fixed-point updates per block.
    precision: matmul precision of ``g`` in the solve: ``'highest'`` (default; true float32 on GPUs
      and TPUs, needed for tolerances below ~1e-4) or None for JAX's default (TensorFloat-32 on
      recent GPUs); see :mod:`iresflow.core.precision`.
    adjoint_failure: ``'nan'`` (default) makes the gradient of an example whose adjoint solve did
      not converge NaN; ``'ignore'`` keeps it.
  """

  atol: float = 1e-6
  rtol: float = 1e-6
  max_iters: int = 200
  precision: str | None = "highest"
  adjoint_failure: str = "nan"

  def __post_init__(self):
    validation.check_nonnegative(self.atol, "atol")
    validation.check_nonnegative(self.rtol, "rtol")
    validation.check_nonnegative_int(self.max_iters, "max_iters")
    precision_lib.check_precision(self.precision)
    check_adjoint_failure(self.adjoint_failure)

  def __call__(self, g: Callable[[jax.Array], jax.Array], y: jax.typing.ArrayLike
               ) -> tuple[jax.Array, FixedPointInfo]:
    return fixed_point_inverse(g, y, atol=self.atol, rtol=self.rtol, max_iters=self.max_iters,
                               precision=self.precision, adjoint_failure=self.adjoint_failure)


def merge_infos(infos: FixedPointInfo, axis: int = 0) -> FixedPointInfo:
  """Summarises per-block infos stacked along ``axis``: iterations summed, worst residual, all converged.

  A report, not a differentiable quantity: gradients stop here (so a merged report can be taken
  inside ``jax.grad``).
  """
  infos = jax.tree.map(jax.lax.stop_gradient, infos)
  return FixedPointInfo(
      iterations=jnp.sum(infos.iterations, axis=axis),
      residual=jnp.max(infos.residual, axis=axis),
      converged=jnp.all(infos.converged, axis=axis))
