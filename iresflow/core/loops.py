"""Rolled or unrolled loops, chosen per backend and per kind of block.

Two loops run inside every training step: over the blocks of a stage (``nn.scan``) and over the
terms of the log-det series (``lax.fori_loop``). Rolled, each body is traced and compiled once, so
compile time does not grow with depth or ``n_terms``. Unrolled, every iteration is traced.

Which is faster depends on the backend, the blocks and the gradient. XLA:CPU compiles the
convolutions inside a loop body without its fast library kernels, so on a CPU a rolled convolutional
step runs several times slower than the unrolled one. Fully connected blocks (vector data) trained
with the Neumann-series gradient (which recomputes ``g`` in the backward pass) are the other way
round: their unrolled step is larger, slower to run and several times slower to compile. With
backprop through the series, unrolled fully connected blocks are faster again. On GPUs and TPUs the
rolled step runs at a similar speed and compiles in a fraction of the time. Hence the defaults,
``unroll=None``, for both loops (blocks and series terms): unrolled on CPU, except for fully
connected blocks with the Neumann gradient (``PowerSeries(gradient='neumann')``, ``Roulette``);
rolled on every other backend.

docs/benchmarks.md has the measurements and compile times. ``True``/``False`` choose explicitly.
"""

from __future__ import annotations

import jax

UNROLLED_BACKENDS = ("cpu",)


def unroll_by_default(backend: str | None = None, *, fully_connected_neumann: bool = False) -> bool:
  """Whether a loop is unrolled when the caller leaves ``unroll=None``.

  Args:
    backend: a JAX platform name (``'cpu'``, ``'gpu'``, ``'tpu'``, ...); None: ``jax.default_backend()``,
      the platform that computations without an explicit device run on.
    fully_connected_neumann: the loop runs fully connected blocks (vector inputs) whose log-det uses
      the Neumann-series gradient; those are rolled on every backend.

  Returns:
    True on the backends in :data:`UNROLLED_BACKENDS`, unless ``fully_connected_neumann``.
  """
  if fully_connected_neumann:
    return False
  return (backend if backend is not None else jax.default_backend()) in UNROLLED_BACKENDS


def check_unroll(unroll, name: str = "unroll") -> None:
  """Raises ``TypeError`` unless ``unroll`` is True, False or None (touches no backend)."""
  if unroll is not None and not isinstance(unroll, bool):
    raise TypeError(f"{name}: expected True, False or None (None: unrolled on CPU only), got {unroll!r}")


def resolve_unroll(unroll: bool | None, name: str = "unroll", *, fully_connected_neumann: bool = False) -> bool:
  """``unroll`` itself if it is a bool, else (None) :func:`unroll_by_default` for the loop's blocks.

  Called at trace time, so settings objects and modules can be built before JAX picks a backend
  (e.g. before ``jax.distributed.initialize``).

  Args:
    unroll: True, False or None.
    name: the argument's name for the error message.
    fully_connected_neumann: see :func:`unroll_by_default`.

  Raises:
    TypeError: ``unroll`` is neither a bool nor None.
  """
  check_unroll(unroll, name)
  return unroll_by_default(fully_connected_neumann=fully_connected_neumann) if unroll is None else unroll
