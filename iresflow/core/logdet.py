"""``log det(I + J_g(x))`` of a residual block: power series, exact value, and bounds (Section 3).

For ``Lip(g) < 1`` the determinant of ``I + J_g`` is positive (Lemma 6) and

    ln det(I + J_g) = sum_{k>=1} (-1)^{k+1} tr(J_g^k) / k                       (eq. 4)

converges. Algorithm 2 truncates the series after ``n`` terms and estimates each trace with
Hutchinson's estimator ``tr(A) = E[v^T A v]``, computing ``v^T J_g^k`` by ``k`` vector-Jacobian
products of one ``jax.vjp`` of ``g``. Truncation biases the estimate; Theorem 3 bounds the bias by
``-d (ln(1 - L) + sum_{k<=n} L^k / k)``, and Lemma 7 brackets the value itself by
``d ln(1 - L) <= ln det <= d ln(1 + L)``.

Beyond the paper (Residual Flows, Chen et al. 2019): :func:`roulette_logdet` is unbiased (Russian
roulette over the number of terms), and the Neumann-series gradient of ``gradient='neumann'`` keeps
memory flat in the number of terms. ``remat=True`` keeps nothing of the estimate for the backward
pass but the input (and the Neumann vector): ``g``'s forward is recomputed there (a ``custom_vjp``),
so a deep flow's step no longer holds every block's activations. Such an estimate is
differentiable in reverse mode only (``jax.grad``/``jax.vjp``, not ``jax.jvp``/``jacfwd``).

Monotone Flows (Ahn et al. 2022) use the Cayley transform ``F = 2 (I + g)^{-1} - I`` of a contraction
``g`` instead of ``x + g(x)``. With ``u = (I + g)^{-1}(x)``, ``J_F = (I - J_g(u)) (I + J_g(u))^{-1}``, so

    ln det J_F = ln det(I - J_g) - ln det(I + J_g) = -2 sum_{k odd} tr(J_g^k) / k,

the same series with the even terms cancelled and the odd ones doubled. Every function here takes
``transform='cayley'`` for it (``'residual'``, the default, is eq. 4); the Neumann gradient
becomes ``-2 sum_{k even} tr(J^k dJ)``, and the bounds change accordingly.

All estimators take a batched residual function ``g: (batch, ...) -> (batch, ...)`` that treats
each example separately, and return ``(g(x), logdet)`` with ``logdet`` of shape ``(batch,)``:
``g(x)`` falls out of the same ``jax.vjp`` and the block needs it for ``y = x + g(x)``.

Dtypes: ``g``, its vector-Jacobian products and the probes run in the input's dtype (bfloat16
inputs stay bfloat16); the terms are summed, and ``logdet`` returned, in :func:`accumulation_dtype`
(float32, or float64 for float64 inputs).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from iresflow.core import _scheduling as scheduling, loops, precision as precision_lib, validation

ResidualFn = Callable[[jax.Array], jax.Array]

PROBES = ("gaussian", "rademacher")


def sample_probes(key: jax.Array, shape: Sequence[int], dtype, probe: str = "gaussian") -> jax.Array:
  """Hutchinson probe vectors with ``E[v] = 0`` and ``Cov(v) = I``.

  Args:
    key: PRNG key.
    shape: output shape, e.g. ``(n_probes, batch, ...)``.
    dtype: floating dtype of the probes.
    probe: ``'gaussian'`` (standard normal) or ``'rademacher'`` (+-1 with equal probability; lower
      variance for the trace estimator, Avron & Toledo 2011).

  Returns:
    Array of ``shape``. Drawn in :func:`accumulation_dtype` and rounded to ``dtype``, so one key gives
    the same probes (up to rounding) whatever the dtype ``g`` runs in.
  """
  draw_dtype = accumulation_dtype(dtype)
  if probe == "gaussian":
    return jax.random.normal(key, shape, draw_dtype).astype(dtype)
  if probe == "rademacher":
    return jax.random.rademacher(key, shape, draw_dtype).astype(dtype)
  raise ValueError(f"probe: expected one of {PROBES}, got {probe!r}")


def accumulation_dtype(dtype) -> jnp.dtype:
  """The dtype log-determinants are summed in: float32, or float64 for float64 inputs.

  Inputs in bfloat16 or float16 run ``g`` and its vector-Jacobian products in that dtype, but the
  series' terms, the traces and the returned log-det are float32: a log-det of a few hundred nats
  has no digits left after the decimal point in bfloat16.
  """
  return jnp.promote_types(dtype, jnp.float32)


def _per_example_dot(a: jax.Array, b: jax.Array, n_leading: int) -> jax.Array:
  """Sums ``a * b`` over all axes after the first ``n_leading`` ones, in the accumulation dtype."""
  dtype = accumulation_dtype(a.dtype)
  return jnp.sum(a.astype(dtype) * b.astype(dtype), axis=tuple(range(n_leading, a.ndim)))


def _check_batched_input(x: jax.Array) -> None:
  validation.check_min_rank(x, 2, "x", " (batch, ...)")
  validation.check_floating(x, "x")


GRADIENTS = ("backprop", "neumann")
TRANSFORMS = ("residual", "cayley")


def _check_transform(transform: str) -> None:
  if transform not in TRANSFORMS:
    raise ValueError(f"transform: expected one of {TRANSFORMS}, got {transform!r}")


def series_coefficient(k, transform: str = "residual"):
  """``c_k`` with ``ln det = sum_{k>=1} c_k tr(J_g^k)``: ``(-1)^{k+1} / k``, or for the Cayley transform
  ``-2 / k`` at odd ``k`` and 0 at even ``k``. ``k`` may be an int or an array."""
  _check_transform(transform)
  odd = k % 2 == 1
  if transform == "residual":
    return jnp.where(odd, 1.0, -1.0) / k
  return jnp.where(odd, -2.0, 0.0) / k


def _transform_weight(transform: str, dtype):
  """``k -> k (-1)^{k+1} c_k`` (1 for eq. 4; -2 or 0 for the Cayley transform), the factor ``_series_loop``
  applies on top of its alternating ``(-1)^{k+1} / k``."""
  if transform == "residual":
    return lambda k: jnp.ones((), dtype)
  return lambda k: jnp.where(k % 2 == 1, -2.0, 0.0).astype(dtype)


def _probe_vector_jacobian(vjp_fn, n_probes: int):
  """``w -> w^T J_g`` for probes stacked on a leading axis ``(n_probes, batch, ...)``.

  One probe calls ``vjp_fn`` directly: ``vmap`` over an axis of size 1 would add a batch dimension
  to every matmul, which XLA:CPU lays out with a transpose copy per product.
  """
  if n_probes == 1:
    return lambda w: vjp_fn(w[0])[0][None]
  return jax.vmap(lambda w: vjp_fn(w)[0])


def _series_loop(vjp_fn, v: jax.Array, n_terms, term_weight, neumann: bool, n_unrolled: int = 0):
  """Runs ``w^T <- w^T J_g`` for ``k = 1..n_terms`` and accumulates the weighted series.

  Returns ``(value, neumann_w)``: ``value[probe, example] = sum_k (-1)^{k+1} c_k v^T J^k v / k`` and,
  if ``neumann``, ``neumann_w = sum_{k=0}^{n-1} (-1)^k c_{k+1} v^T J^k`` (else None), where ``c_k`` is
  ``term_weight(k)``. The first ``n_unrolled`` terms (a static count) are traced one by one, the
  rest run in one loop body; ``n_terms`` may be traced (then that loop is a ``while_loop``).
  """
  dtype = accumulation_dtype(v.dtype)  # w stays in v's dtype; sums are accumulated in this one
  vector_jacobian = _probe_vector_jacobian(vjp_fn, v.shape[0])

  def add_term(k, carry):
    w, value, neumann_w = carry
    weight = term_weight(k).astype(dtype)
    sign = jnp.where(k % 2 == 1, 1.0, -1.0).astype(dtype)
    if neumann:
      neumann_w = neumann_w + sign * weight * w.astype(dtype)  # (-1)^{k-1} c_k v^T J^{k-1}
    w = vector_jacobian(w)  # v^T J^k
    return w, value + sign * weight / k * _per_example_dot(w, v, 2), neumann_w

  value = jnp.zeros(v.shape[:2], dtype)
  carry = (v, value, jnp.zeros(v.shape, dtype) if neumann else None)
  static_count = isinstance(n_terms, int)
  if static_count:
    n_unrolled = min(n_unrolled, n_terms)
  for k in range(1, n_unrolled + 1):
    carry = add_term(k, carry)
    if k < n_unrolled and neumann:
      carry = scheduling.next_term_after_sums(*carry)
  if not static_count or n_unrolled < n_terms:
    carry = jax.lax.fori_loop(n_unrolled + 1, n_terms + 1, add_term, carry)
  _, value, neumann_w = carry
  return value, neumann_w


def _neumann_surrogate(vjp_fn, v: jax.Array, neumann_w: jax.Array) -> jax.Array:
  """``w^T J_g v`` per probe and example; its gradient is the Neumann-series gradient (Chen et al. 2019, eq. 8)."""
  vector_jacobian = _probe_vector_jacobian(vjp_fn, v.shape[0])
  return _per_example_dot(vector_jacobian(neumann_w.astype(v.dtype)), v, 2)


def _with_neumann_gradient(vjp_fn, v, value, neumann_w):
  """``value`` forward; backward the gradient of ``w^T J_g v`` with ``w`` held constant."""
  surrogate = _neumann_surrogate(vjp_fn, v, jax.lax.stop_gradient(neumann_w))
  return jax.lax.stop_gradient(value) + surrogate - jax.lax.stop_gradient(surrogate)


def _neumann_series(g, x, v, n_terms, term_weight, n_unrolled: int, with_gradient: bool):
  """``(g(x), per-example series, Neumann vector)``; with the Neumann-series gradient if ``with_gradient``."""
  gx, vjp_fn = jax.vjp(g, x)
  value, neumann_w = _series_loop(jax.lax.stop_gradient(vjp_fn), v, n_terms, term_weight, neumann=True,
                                  n_unrolled=n_unrolled)
  if with_gradient:
    value = _with_neumann_gradient(vjp_fn, v, value, neumann_w)
  return gx, jnp.mean(value, axis=0), neumann_w


def _neumann_surrogate_estimate(g, x, v, neumann_w):
  """``(g(x), per-example surrogate)``: what the backward pass of a rematerialised estimate differentiates.

  ``neumann_w`` is saved from the forward pass; tied to ``x`` (see :func:`iresflow.core._scheduling.after_input`),
  its first product through ``g``'s last layer waits for this block's backward pass.
  """
  gx, vjp_fn = jax.vjp(g, x)
  return gx, jnp.mean(_neumann_surrogate(vjp_fn, v, scheduling.after_input(neumann_w, x)), axis=0)


def _check_remat(remat) -> None:
  if remat is not None and not isinstance(remat, bool):
    raise TypeError(f"remat: expected True, False or None, got {remat!r}")


def power_series_logdet(
    key: jax.Array,
    g: ResidualFn,
    x: jax.typing.ArrayLike,
    *,
    n_terms: int,
    n_probes: int = 1,
    probe: str = "gaussian",
    gradient: str = "backprop",
    unroll: bool | None = None,
    remat: bool | None = None,
    transform: str = "residual",
) -> tuple[jax.Array, jax.Array]:
  """Truncated power-series estimate of ``ln det(I + J_g(x))`` per example (Algorithm 2, eq. 5).

  ``PS(J_g, n) = sum_{k=1}^{n} (-1)^{k+1} v^T J_g^k v / k``, averaged over ``n_probes`` probes. The
  ``n_terms`` vector-Jacobian products run in a ``lax.fori_loop`` (one traced copy of ``g``'s
  backward pass, whatever ``n_terms`` is).

  The estimate is unbiased for the truncated series ``PS(J_g, n)`` and biased for ``ln det`` by at
  most :func:`series_truncation_bound`.

  Gradients:

  * ``'backprop'``: through every term (the paper's); memory grows with ``n_terms``.
  * ``'neumann'`` (Residual Flows, Chen et al. 2019, Sec. 3.2): ``d ln det = tr((I + J)^{-1} dJ)``
    ``= sum_k (-1)^k tr(J^k dJ)``. The series runs without gradient; the gradient is that of the
    surrogate ``w^T J_g v`` with ``w^T = sum_{k<n} (-1)^k v^T J_g^k`` held constant, so memory stays
    flat in ``n_terms``. The returned value is still the series.

  Args:
    key: PRNG key for the probes.
    g: batched residual function, ``(batch, ...) -> (batch, ...)``, one example at a time.
    x: inputs, shape ``(batch, ...)``.
    n_terms: number of series terms ``n >= 1``.
    n_probes: number of Hutchinson probes per example ``>= 1``.
    probe: ``'gaussian'`` or ``'rademacher'``.
    gradient: ``'backprop'`` or ``'neumann'``.
    unroll: trace all ``n_terms`` vector-Jacobian products instead of one loop body. Compile
      time then grows with ``n_terms``; on XLA:CPU the step runs several times faster, because
      convolutions inside a loop body are emitted as naive loops there (see docs/benchmarks.md).
      None (default): unrolled on CPU (except vector inputs ``(batch, d)`` with the Neumann
      gradient), a loop elsewhere (:mod:`iresflow.core.loops`).
    remat: recompute ``g``'s forward in the backward pass instead of storing its activations;
      only ``x``, ``g``'s weights and, for ``'neumann'``, the vector ``w`` are kept. Same values
      and gradients (reverse mode only); one more forward of ``g`` (with ``'backprop'``, of the
      whole series) per backward pass. None (default): with ``'neumann'`` only.
    transform: ``'residual'`` (``ln det(I + J_g)``, eq. 4) or ``'cayley'`` (``ln det(I - J_g) -
      ln det(I + J_g)``, the odd terms only; see the module docstring).

  Returns:
    ``(g(x), logdet)`` with ``logdet`` of shape ``(batch,)``.
  """
  x = jnp.asarray(x)
  _check_batched_input(x)
  validation.check_positive_int(n_terms, "n_terms")
  validation.check_positive_int(n_probes, "n_probes")
  if gradient not in GRADIENTS:
    raise ValueError(f"gradient: expected one of {GRADIENTS}, got {gradient!r}")
  _check_remat(remat)
  _check_transform(transform)
  fully_connected_neumann = x.ndim == 2 and gradient == "neumann"  # rolled by default (iresflow.core.loops)
  n_unrolled = n_terms if loops.resolve_unroll(unroll, fully_connected_neumann=fully_connected_neumann) else 0
  ones = _transform_weight(transform, accumulation_dtype(x.dtype))

  def probes(key, x):
    return scheduling.after_input(sample_probes(key, (n_probes,) + x.shape, x.dtype, probe), x)

  def forward(g, x, key, with_gradient=False):
    v = probes(key, x)
    if gradient == "backprop":
      gx, vjp_fn = jax.vjp(g, x)
      value, _ = _series_loop(vjp_fn, v, n_terms, ones, neumann=False, n_unrolled=n_unrolled)
      return gx, jnp.mean(value, axis=0), None
    return _neumann_series(g, x, v, n_terms, ones, n_unrolled, with_gradient)

  def differentiable(g, x, key, neumann_w):
    if gradient == "backprop":
      return forward(g, x, key)[:2]
    return _neumann_surrogate_estimate(g, x, probes(key, x), neumann_w)

  if (gradient == "neumann" if remat is None else remat):
    return scheduling.rematerialized(forward, differentiable, g, x, key)
  return forward(g, x, key, with_gradient=True)[:2]


ROULETTE_DISTRIBUTIONS = ("geometric", "poisson")


def roulette_tail_probability(j: jax.Array, distribution: str, parameter: float) -> jax.Array:
  """``P(M >= j)`` for the number ``M`` of extra terms of the Russian-roulette estimator.

  Args:
    j: term index beyond the exact ones, ``j >= 1`` (array).
    distribution: ``'geometric'`` (``P(M = m) = p (1 - p)^m``, ``m >= 0``, so ``P(M >= j) = (1 - p)^j``)
      or ``'poisson'`` (``M ~ Poisson(lambda)``, ``P(M >= j)`` = the regularised lower incomplete
      gamma function ``P(j, lambda)``).
    parameter: ``p`` in (0, 1) or ``lambda > 0``.
  """
  j = jnp.asarray(j, jnp.float32)
  if distribution == "geometric":
    return (1.0 - parameter) ** j
  return jnp.where(j <= 0, 1.0, jax.scipy.special.gammainc(jnp.maximum(j, 1.0), parameter))


def roulette_logdet(
    key: jax.Array,
    g: ResidualFn,
    x: jax.typing.ArrayLike,
    *,
    n_exact_terms: int = 2,
    distribution: str = "geometric",
    geometric_p: float = 0.5,
    poisson_rate: float = 2.0,
    max_terms: int = 100,
    n_probes: int = 1,
    probe: str = "gaussian",
    unroll: bool | None = None,
    remat: bool | None = None,
    transform: str = "residual",
) -> tuple[jax.Array, jax.Array]:
  """Unbiased Russian-roulette estimate of ``ln det(I + J_g(x))`` (Residual Flows, Chen et al. 2019).

  The first ``n_exact_terms`` terms of eq. (4) are always computed; then ``M`` more, with ``M`` drawn
  from ``distribution`` once per call, each extra term ``n_exact + j`` reweighted by
  ``1 / P(M >= j)``. The expectation over ``M`` and the probes is the infinite series, i.e. the exact
  log-det: no truncation bias. The terms run in a ``while_loop`` that stops after
  ``n_exact_terms + M`` terms; gradients are always the Neumann-series ones (see
  :func:`power_series_logdet`), with the same roulette weights, so they are unbiased too and memory
  does not grow with ``M``.

  The cap: at most ``max_terms`` terms are computed, i.e. ``M`` is clipped at
  ``max_terms - n_exact_terms``. Every term up to the cap keeps its weight ``1 / P(M >= j)``, so the
  expectation is the series truncated at ``max_terms``: a bias of at most the Theorem 3 bound at
  ``max_terms`` terms (``Roulette.bias_bound``), which the trainer reports beside the test metric.

  Args:
    key: PRNG key (probes and ``M``).
    g: batched residual function.
    x: inputs, shape ``(batch, ...)``.
    n_exact_terms: terms always computed (``>= 1``; Residual Flows use 2).
    distribution: ``'geometric'`` or ``'poisson'``.
    geometric_p: success probability ``p`` of the geometric distribution (mean extra terms ``(1-p)/p``).
    poisson_rate: ``lambda`` of the Poisson distribution (mean extra terms).
    max_terms: cap on the total number of terms (``>= n_exact_terms``).
    n_probes: Hutchinson probes per example.
    probe: ``'gaussian'`` or ``'rademacher'``.
    unroll: trace the ``n_exact_terms`` terms one by one (the random extra terms always run in a
      loop). None (default): on CPU only (:mod:`iresflow.core.loops`).
    remat: recompute ``g``'s forward in the backward pass, keeping only ``x``, the parameters and
      the Neumann vector (see :func:`power_series_logdet`). None (default): on.
    transform: ``'residual'`` or ``'cayley'`` (see :func:`power_series_logdet`).

  Returns:
    ``(g(x), logdet)`` with ``logdet`` of shape ``(batch,)``.
  """
  x = jnp.asarray(x)
  _check_batched_input(x)
  validation.check_positive_int(n_exact_terms, "n_exact_terms")
  validation.check_positive_int(n_probes, "n_probes")
  validation.check_positive_int(max_terms, "max_terms")
  if max_terms < n_exact_terms:
    raise ValueError(f"max_terms: expected >= n_exact_terms ({n_exact_terms}), got {max_terms}")
  if distribution == "geometric":
    if not 0.0 < geometric_p < 1.0:
      raise ValueError(f"geometric_p: expected a probability in (0, 1), got {geometric_p}")
    parameter = geometric_p
  elif distribution == "poisson":
    if not poisson_rate > 0:
      raise ValueError(f"poisson_rate: expected a positive number, got {poisson_rate}")
    parameter = poisson_rate
  else:
    raise ValueError(f"distribution: expected one of {ROULETTE_DISTRIBUTIONS}, got {distribution!r}")
  _check_remat(remat)
  _check_transform(transform)
  # The roulette's gradient is the Neumann series: fully connected blocks keep the loop by default.
  n_unrolled = n_exact_terms if loops.resolve_unroll(unroll, fully_connected_neumann=x.ndim == 2) else 0
  transform_weight = _transform_weight(transform, jnp.float32)

  def term_weight(k):
    j = k - n_exact_terms
    return transform_weight(k) * jnp.where(j <= 0, 1.0, 1.0 / roulette_tail_probability(j, distribution, parameter))

  def probes(key, x):
    return scheduling.after_input(sample_probes(jax.random.split(key)[0], (n_probes,) + x.shape, x.dtype, probe), x)

  def forward(g, x, key, with_gradient=False):
    count_key = jax.random.split(key)[1]
    if distribution == "geometric":
      extra = jax.random.geometric(count_key, geometric_p) - 1  # jax's geometric counts trials, >= 1
    else:
      extra = jax.random.poisson(count_key, poisson_rate)
    n_terms = n_exact_terms + jnp.minimum(extra, max_terms - n_exact_terms)
    return _neumann_series(g, x, probes(key, x), n_terms, term_weight, n_unrolled, with_gradient)

  def differentiable(g, x, key, neumann_w):
    return _neumann_surrogate_estimate(g, x, probes(key, x), neumann_w)

  if remat is None or remat:
    return scheduling.rematerialized(forward, differentiable, g, x, key)
  return forward(g, x, key, with_gradient=True)[:2]


def exact_series(g: ResidualFn, x: jax.typing.ArrayLike, n_terms: int, *, transform: str = "residual"
                 ) -> jax.Array:
  """The truncated series ``PS(J_g, n)`` of eq. (5) computed exactly from the full Jacobian.

  For tests and small problems: ``O(d^2)`` memory per example.

  Args:
    g: batched residual function.
    x: inputs, shape ``(batch, ...)``.
    n_terms: number of terms ``n >= 1``.
    transform: ``'residual'`` or ``'cayley'`` (:func:`series_coefficient`).

  Returns:
    ``(batch,)`` array of ``sum_{k=1}^{n} c_k tr(J_g^k)``: ``c_k = (-1)^{k+1} / k`` for eq. (5).
  """
  validation.check_positive_int(n_terms, "n_terms")
  _check_transform(transform)
  jacobians = residual_jacobians(g, x)

  def series(jac):
    power = jnp.eye(jac.shape[0], dtype=jac.dtype)
    total = 0.0
    for k in range(1, n_terms + 1):
      power = power @ jac
      total = total + series_coefficient(k, transform) * jnp.trace(power)
    return total

  return jax.vmap(series)(jacobians)


def residual_jacobians(g: ResidualFn, x: jax.typing.ArrayLike) -> jax.Array:
  """Per-example Jacobians of ``g``, flattened to ``(batch, d, d)`` (``[b, i, j] = dg_i/dx_j`` of example ``b``).

  ``d`` forward-mode products (``jax.jvp``) on the whole batch, the ``j``-th pushing the ``j``-th unit
  vector through every example at once. ``g`` must act on each example separately, as every residual
  function does; it may close over per-example arrays (a conditional ``g`` over its context, shape
  ``(batch, ...)``), which is why ``g`` is never called on a single example here.
  """
  x = jnp.asarray(x)
  _check_batched_input(x)
  batch, d = x.shape[0], math.prod(x.shape[1:])
  basis = jnp.eye(d, dtype=x.dtype).reshape((d, 1) + x.shape[1:])
  tangents = jnp.broadcast_to(basis, (d,) + x.shape)
  columns = jax.vmap(lambda t: jax.jvp(g, (x,), (t,))[1])(tangents)  # [j, b, ...] = J_b e_j
  return jnp.moveaxis(columns.reshape(d, batch, d), 0, -1)


def exact_logdet(g: ResidualFn, x: jax.typing.ArrayLike, *, precision: str | None = "highest",
                 transform: str = "residual") -> tuple[jax.Array, jax.Array]:
  """Exact ``ln |det(I + J_g(x))|`` per example, by forward-mode Jacobians and ``slogdet``.

  Costs ``d`` forward passes and ``O(d^3)`` per example: for tests, 2-D densities and small images.
  For contractive ``g`` the determinant is positive (Lemma 6), so this is ``ln det``. ``g`` is
  differentiated with its matmuls at ``precision`` (default ``'highest'``, see
  :mod:`iresflow.core.precision`), so "exact" holds on GPUs and TPUs too.

  Args:
    g: batched residual function.
    x: inputs, shape ``(batch, ...)``.
    precision: matmul precision of ``g`` (None: JAX's ambient default).
    transform: ``'residual'``, or ``'cayley'`` for ``ln |det(I - J_g)| - ln |det(I + J_g)|``.

  Returns:
    ``(g(x), logdet)`` with ``logdet`` of shape ``(batch,)``.
  """
  _check_transform(transform)
  g = precision_lib.with_matmul_precision(g, precision)
  jacobians = residual_jacobians(g, x)
  jacobians = jacobians.astype(accumulation_dtype(jacobians.dtype))  # no slogdet in bfloat16
  eye = jnp.eye(jacobians.shape[-1], dtype=jacobians.dtype)
  logdet = scheduling.log_abs_det_each(eye + jacobians)
  if transform == "cayley":
    logdet = scheduling.log_abs_det_each(eye - jacobians) - logdet
  return g(jnp.asarray(x)), logdet


def logdet_bounds(lipschitz: float | Sequence[float], dim: int, *, transform: str = "residual"
                  ) -> tuple[float, float]:
  """Lemma 7: ``d sum_t ln(1 - L_t) <= ln det J_F(x) <= d sum_t ln(1 + L_t)`` for all ``x``.

  For the Cayley transform every singular value of ``J_F = (I - J)(I + J)^{-1}`` lies in
  ``[(1 - L) / (1 + L), (1 + L) / (1 - L)]``, so the bounds are ``-/+ d sum_t ln((1 + L_t) / (1 - L_t))``.

  Args:
    lipschitz: ``Lip(g_t)`` of one block or a sequence, one per block, each in ``[0, 1)``.
    dim: data dimension ``d``.
    transform: ``'residual'`` or ``'cayley'``.

  Returns:
    ``(lower, upper)`` as Python floats.
  """
  values = np.atleast_1d(np.asarray(lipschitz, dtype=np.float64))
  if np.any(values < 0) or np.any(values >= 1):
    raise ValueError(f"lipschitz: expected values in [0, 1), got {values.tolist()}")
  validation.check_positive_int(dim, "dim")
  _check_transform(transform)
  if transform == "cayley":
    spread = float(dim * np.sum(np.log1p(values) - np.log1p(-values)))
    return -spread, spread
  return float(dim * np.sum(np.log1p(-values))), float(dim * np.sum(np.log1p(values)))


def series_truncation_bound(lipschitz: float, dim: int, n_terms: int, *, transform: str = "residual") -> float:
  """Theorem 3: ``|PS(J_g, n) - ln det(I + J_g)| <= -d (ln(1 - L) + sum_{k=1}^{n} L^k / k)``.

  Worked values per dimension: L = 0.9 gives 0.47 (n = 5), 0.18 (n = 10), 0.039 (n = 20);
  L = 0.5, n = 5 gives 0.0046. For the Cayley transform the tail is ``2 d sum_{k>n, k odd} L^k / k``
  (the same argument: ``|tr(J^k)| <= d L^k``).

  Args:
    lipschitz: ``L = Lip(g)`` in ``[0, 1)``.
    dim: data dimension ``d``.
    n_terms: number of terms ``n >= 0`` kept.
    transform: ``'residual'`` or ``'cayley'``.

  Returns:
    The bound as a Python float.
  """
  _check_transform(transform)
  if not 0.0 <= lipschitz < 1.0:
    raise ValueError(f"lipschitz: expected a value in [0, 1), got {lipschitz}")
  validation.check_positive_int(dim, "dim")
  validation.check_nonnegative_int(n_terms, "n_terms")
  # The tail sum_{k>n} L^k / k, summed directly: -ln(1 - L) - partial sum cancels badly for small L.
  if transform == "cayley":
    return 2 * dim * _odd_tail(lipschitz, n_terms)
  tail, k, term = 0.0, n_terms + 1, 1.0
  while k < 100_000:
    term = lipschitz**k / k
    tail += term
    if term < 1e-18 * max(tail, 1e-300):
      break
    k += 1
  else:
    tail = -math.log1p(-lipschitz) - sum(lipschitz**j / j for j in range(1, n_terms + 1))
  return dim * tail


def _odd_tail(lipschitz: float, n_terms: int) -> float:
  """``sum_{k > n, k odd} L^k / k``, with ``atanh(L) = sum_{k odd} L^k / k`` where the direct sum is slow."""
  tail, k = 0.0, n_terms + 1 + (n_terms % 2 == 1)  # the first odd k > n
  while k < 100_000:
    term = lipschitz**k / k
    tail += term
    if term < 1e-18 * max(tail, 1e-300):
      return tail
    k += 2
  return math.atanh(lipschitz) - sum(lipschitz**j / j for j in range(1, n_terms + 1, 2))
