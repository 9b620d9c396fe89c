"""Rolled or unrolled loops, chosen per backend.

Two loops run inside every training step: over the blocks of a stage (``nn.scan``) and over the
terms of the log-det series (``lax.fori_loop``). Rolled, each body is traced and compiled once, so
compile time does not grow with depth or ``n_terms``. Unrolled, every iteration is traced.

Which is faster depends on the backend. XLA:CPU compiles the convolutions and matmuls inside a loop
body without its fast library kernels, so on a CPU the rolled step runs several times slower than
the unrolled one; on GPUs and TPUs the rolled step runs at a similar speed and compiles in a
fraction of the time. Hence the default, ``unroll=None``: unrolled on CPU, rolled on every other
backend (docs/benchmarks.md has the measurements and compile times). ``True``/``False`` choose
explicitly.
"""

from __future__ import annotations

import jax

UNROLLED_BACKENDS = ("cpu",)


def unroll_by_default(backend: str | None = None) -> bool:
  """Whether loops are unrolled when the caller leaves ``unroll=None``.

  Args:
    backend: a JAX platform name (``'cpu'``, ``'gpu'``, ``'tpu'``, ...); None: ``jax.default_backend()``,
      the platform that computations without an explicit device run on.

  Returns:
    True on the backends in :data:`UNROLLED_BACKENDS`.
  """
  return (backend if backend is not None else jax.default_backend()) in UNROLLED_BACKENDS


def check_unroll(unroll, name: str = "unroll") -> None:
  """Raises ``TypeError`` unless ``unroll`` is True, False or None (touches no backend)."""
  if unroll is not None and not isinstance(unroll, bool):
    raise TypeError(f"{name}: expected True, False or None (None: unrolled on CPU only), got {unroll!r}")


def resolve_unroll(unroll: bool | None, name: str = "unroll") -> bool:
  """``unroll`` itself if it is a bool, else (None) :func:`unroll_by_default`.

  Called at trace time, so settings objects and modules can be built before JAX picks a backend
  (e.g. before ``jax.distributed.initialize``).

  Args:
    unroll: True, False or None.
    name: the argument's name for the error message.

  Raises:
    TypeError: ``unroll`` is neither a bool nor None.
  """
  check_unroll(unroll, name)
  return unroll_by_default() if unroll is None else unroll
