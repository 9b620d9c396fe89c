"""Work-arounds for how XLA:CPU schedules and runs the log-det estimators; the series maths is in ``logdet``.

Why this module exists, once: XLA orders independent work as it likes, and on CPU its choices cost
memory or hang. Three kinds of fix live here, each applied where :mod:`iresflow.core.logdet` builds an
estimate:

* **Ordering ties** (:func:`per_example_zero`, :func:`after_input`, :func:`next_term_after_sums`): a
  value plus zero computed from another value, so that XLA cannot start the first before the second
  exists. Without them, XLA:CPU's scheduler runs every unrolled block's first probe product before
  any block, keeps all unrolled series terms alive until the end, and interleaves the series of
  several blocks, so a step's memory grows with depth and terms. Each tie is computed per example,
  so a NaN in one example cannot reach another.
* **Rematerialisation by ``custom_vjp``** (:func:`rematerialized`) rather than ``jax.checkpoint``,
  whose optimisation barriers XLA:CPU removes, merging the recomputation back into the forward pass.
* **One LU decomposition at a time** (:func:`log_abs_det_each`): jaxlib's batched LU on CPU can
  deadlock its thread pool.

The ordering ties and the one-at-a-time LU are applied on the backends in :data:`MEASURED_BACKENDS`
only, where they were measured (docs/design_notes.md: on XLA:CPU the ties save memory from about 3
blocks per stage and cost 6.3 MiB with 2; the batched LU hangs). Elsewhere nothing has been measured,
and the program is the plain one (the ties add zeros, so values are the same either way; a test checks
both programs). The tie inside :func:`rematerialized`'s backward pass stays on every backend: it is
what keeps any compiler from merging the recomputation back into the forward pass.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

ResidualFn = Callable[[jax.Array], jax.Array]
MEASURED_BACKENDS = ("cpu",)


def work_arounds_apply() -> bool:
  """Whether the ordering ties and the one-at-a-time LU apply: the default backend was measured to need them.

  Read when a function is traced (never at import, so that multi-host launches can initialise the
  runtime after importing the package).
  """
  return jax.default_backend() in MEASURED_BACKENDS


def next_term_after_sums(w: jax.Array, value: jax.Array, neumann_w: jax.Array
                         ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The series carry ``(w, value, neumann_w)`` with ``w`` tied to the sums so far.

  Term ``k + 1`` of an unrolled series then starts from ``w + 0 * (sums so far)``: XLA:CPU's
  scheduler would otherwise defer the sums of unrolled terms and keep every ``v^T J^k`` alive until
  the end (memory growing with the number of terms). Per probe and example.
  """
  if not work_arounds_apply():
    return w, value, neumann_w
  first_entries = neumann_w.reshape(neumann_w.shape[:2] + (-1,))[..., 0]
  tie = jnp.zeros((), value.dtype) * (value + first_entries)
  return w + tie.reshape(tie.shape + (1,) * (w.ndim - 2)).astype(w.dtype), value, neumann_w


def per_example_zero(values: jax.Array, like: jax.Array) -> jax.Array:
  """``0 * values`` shaped to broadcast against ``like`` example by example (an ordering tie for XLA)."""
  zero = jnp.zeros((), values.dtype) * values
  return zero.reshape(values.shape[:1] + (1,) * (like.ndim - 1)).astype(like.dtype)


def after_input(v: jax.Array, x: jax.Array) -> jax.Array:
  """``v`` ``(n_probes, batch, ...)`` plus zero computed from ``x``'s first entry, example by example.

  An ordering tie for the vectors a series starts from (probes, the saved Neumann vector): they do
  not depend on the block's input, so without it XLA:CPU's scheduler runs their first
  vector-Jacobian product in every unrolled block (``v^T`` through ``g``'s last layer, an
  activation of the hidden width) long before the block runs and keeps each result until then;
  tied, it cannot start before the block's input exists.
  """
  if not work_arounds_apply():
    return v
  first_entries = x.reshape(x.shape[0], -1)[:, 0]
  return v + per_example_zero(first_entries, v[0])[None]


def rematerialized(forward, differentiable, g: ResidualFn, x: jax.Array, key: jax.Array
                    ) -> tuple[jax.Array, jax.Array]:
  """``forward``'s estimate; in the backward pass ``differentiable`` is recomputed and differentiated.

  Args:
    forward: ``forward(g, x, key) -> (g(x), logdet, saved)``, where ``saved`` is all the backward pass
      keeps besides ``x``, ``g``'s arrays and ``key`` (the Neumann vector, or None).
    differentiable: ``differentiable(g, x, key, saved) -> (g(x), logdet)``, a function whose
      vector-Jacobian product is the estimator's gradient.
    g: the residual function; the arrays it closes over (its weights) get gradients.
    x: inputs.
    key: the estimator's key (probes are drawn again from it in the backward pass).

  A ``custom_vjp`` rather than ``jax.checkpoint``: XLA:CPU removes the optimization barriers that
  ``jax.checkpoint`` relies on and then merges the recomputation back into the forward pass, so
  nothing is saved there. Here the recomputation starts from ``x + 0 * cotangent``: it cannot run
  (or be merged with anything) before the cotangent exists, on any backend, unless both cotangents
  are compile-time constants.
  """
  g_open, weights = jax.closure_convert(g, x)

  def close(weights):
    return lambda z: g_open(z, *weights)

  def forward_in_order(x, weights, key):
    gx, value, saved = forward(close(weights), x, key)
    # g(x) + 0 * log-det, per example: whatever consumes g(x) (the next block) waits for this block's series, so
    # the series of several blocks are not kept in flight together (XLA:CPU's scheduler otherwise
    # interleaves unrolled series, and their buffers add up).
    if work_arounds_apply():
      gx = gx + per_example_zero(value, gx)
    return gx, value, saved

  @jax.custom_vjp
  def run(x, weights, key):
    gx, value, _ = forward_in_order(x, weights, key)
    return gx, value

  def run_forward(x, weights, key):
    gx, value, saved = forward_in_order(x, weights, key)
    return (gx, value), (x, weights, key, saved)

  def run_backward(residuals, cotangents):
    x, weights, key, saved = residuals
    # Zero, but computed from both cotangents of each example (in a flow at least the one of g(x) is
    # data, where the log-det's is often a constant that XLA would fold).
    gx_cotangent, logdet_cotangent = cotangents
    first_entries = gx_cotangent.reshape(gx_cotangent.shape[0], -1)[:, 0].astype(logdet_cotangent.dtype)
    tie = per_example_zero(first_entries + logdet_cotangent, x)
    _, vjp_fn = jax.vjp(lambda x, weights: differentiable(close(weights), x, key, saved), x + tie, weights)
    x_cotangent, weights_cotangent = vjp_fn(cotangents)
    return x_cotangent, weights_cotangent, None

  run.defvjp(run_forward, run_backward)
  return run(x, weights, key)


def log_abs_det_each(matrices: jax.Array) -> jax.Array:
  """``ln |det|`` of each matrix of ``(batch, d, d)``, one LU decomposition after the other.

  Not one batched ``slogdet``: on XLA:CPU, jaxlib (0.10) splits a batched LU decomposition into tasks
  on the intra-op thread pool and blocks its pool thread until they are done. When as many batched
  decompositions run at once as the pool has threads (two blocks' log-dets of one flow on a 2-core
  machine), every thread waits for tasks that no thread is left to run, and the program hangs. A
  single matrix's decomposition runs in its calling thread.
  """
  if not work_arounds_apply():
    return jnp.linalg.slogdet(matrices)[1]
  return jax.lax.map(lambda matrix: jnp.linalg.slogdet(matrix)[1], matrices)
