"""Compiler settings for programs that run once, such as a model's initialisation.

XLA:CPU spends most of an initialisation's compile time in LLVM's optimisation passes over the
random-number code of the parameter initialisers (threefry's unrolled rounds, the truncated normal's
``erfinv``) and the power iterations of the norm estimators: a program that runs once, whose
run time is a fraction of a second either way. :func:`jit_run_once` compiles such programs without
those passes on CPU; on other backends it is plain :func:`jax.jit`. The numbers it computes are those
of :func:`jax.jit` up to float32 rounding (a power iteration on an operator whose top singular values
are clustered can end at another vector of the top singular subspace). Measurements: the design notes ("Initialisation compiled to run once").
"""

from __future__ import annotations

from typing import Any, Callable

import jax

# XLA DebugOptions for a program compiled to run once on CPU: LLVM at -O0, its expensive passes off.
RUN_ONCE_CPU_COMPILER_OPTIONS: dict[str, Any] = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
}


def jit_run_once(fun: Callable, **jit_kwargs) -> Callable:
  """:func:`jax.jit` of ``fun`` for a program that runs once (initialisation), compiled fast on CPU.

  The backend is looked up when this is called (never at import), so call it where the program is
  about to run, after any ``jax.distributed.initialize``.

  Args:
    fun: the function to compile.
    **jit_kwargs: passed on to :func:`jax.jit` (``static_argnums``, ``out_shardings``, ...).

  Returns:
    The jitted function; on CPU its compilation uses :data:`RUN_ONCE_CPU_COMPILER_OPTIONS`.
  """
  if "compiler_options" in jit_kwargs:
    raise TypeError("jit_run_once: compiler_options are chosen by the backend; use jax.jit to set them")
  options = dict(RUN_ONCE_CPU_COMPILER_OPTIONS) if jax.default_backend() == "cpu" else None
  return jax.jit(fun, compiler_options=options, **jit_kwargs)
