"""Matrix-multiply precision for the computations that must be accurate to a tolerance.

JAX's default float32 matmuls and convolutions trade accuracy for speed on accelerators: TensorFloat-32
on recent NVIDIA GPUs (10-bit mantissa, relative error about 5e-4), one bfloat16 pass on TPU. That is
fine for a training step, but not for

* the fixed-point inverse (Algorithm 1), which must drive ``max |x + g(x) - y|`` below a tolerance
  such as 1e-5: with TF32 matmuls in ``g`` the residual of some examples stalls above it and their
  loop runs to ``max_iters`` (the GPU measurement is in docs/vs_normflows_gpu.md);
* the spectral-norm estimate (eq. 2), whose error goes straight into ``Lip(g)``;
* the exact log-determinant, whose name promises what it computes.

Those run under :func:`with_matmul_precision` (default ``'highest'``: true float32 on GPUs, six
bfloat16 passes on TPU). On CPUs every setting computes in float32, so nothing changes there.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import jax

PRECISIONS = ("highest", "float32", "high", "tensorfloat32", "bfloat16", "default")

Fn = TypeVar("Fn", bound=Callable)


def check_precision(precision, name: str = "precision") -> None:
  """Raises ``ValueError`` unless ``precision`` is None (the ambient default) or one of ``PRECISIONS``."""
  if precision is not None and precision not in PRECISIONS:
    raise ValueError(f"{name}: expected None (JAX's default) or one of {PRECISIONS}, got {precision!r}")


def with_matmul_precision(fn: Fn, precision: str | None) -> Fn:
  """``fn`` with every matmul and convolution it traces at ``precision``.

  The precision is a parameter of each traced ``dot_general`` / ``conv_general_dilated``, so it holds
  in the function's derivatives and inside the loops that call it, however late they are traced.

  Args:
    fn: any function of arrays.
    precision: one of ``PRECISIONS`` (as for ``jax.default_matmul_precision``), or None to leave
      ``fn`` unchanged.

  Returns:
    A function with ``fn``'s signature.
  """
  check_precision(precision)
  if precision is None:
    return fn

  def at_precision(*args, **kwargs):
    with jax.default_matmul_precision(precision):
      return fn(*args, **kwargs)

  return at_precision
