"""The contract of every invertible piece of iresflow, in one place.

An invertible piece maps a batch ``x`` of shape ``(batch, ...)`` to ``y`` and back:

* ``forward_and_log_det(x, **settings) -> (y, log_det)`` with ``log_det = log|det dy/dx|`` per
  example, shape ``(batch,)``, in float32 (float64 for float64 inputs) whatever the input's dtype;
* ``inverse(y, **settings) -> x``;
* ``inverse_and_log_det(y, **settings) -> (x, log|det dx/dy|)``, which is ``-log_det`` of the forward
  map at the solution ``x``.

The settings are keyword-only, and a piece takes only those it uses: ``estimator=`` (a
``iresflow.core.LogDetEstimator``) where the log-det is estimated (residual blocks, flow steps,
flows), ``solver=`` (a ``iresflow.core.FixedPointSolver``) where the inverse is a fixed point, and
``context=`` where the map is conditional. ActNorm and Squeeze have exact log-dets and closed-form
inverses, so they take none.

``__call__``, one rule across modules: it is what the module is for. A piece of a bijection (ActNorm,
Squeeze, a block, a flow step) returns ``y``; a model returns its output: ``IResNetFlow`` the
log-density ``log p(x)``, ``IResNetClassifier`` the logits.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import jax


@runtime_checkable
class Invertible(Protocol):
  """An invertible map with its log-determinant both ways (see the module docstring for the conventions)."""

  def forward_and_log_det(self, x: jax.Array, **settings) -> tuple[jax.Array, jax.Array]:
    """``(y, log|det dy/dx|)``: ``y`` of ``x``'s batch size, the log-det of shape ``(batch,)``."""
    ...

  def inverse(self, y: jax.Array, **settings) -> jax.Array:
    """``x`` such that the forward map sends it to ``y``."""
    ...

  def inverse_and_log_det(self, y: jax.Array, **settings) -> tuple[jax.Array, jax.Array]:
    """``(x, log|det dx/dy|)``, the negative of the forward log-det at ``x``."""
    ...
