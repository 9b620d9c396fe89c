"""Argument checks shared by the core functions: clear errors that name the argument.

Checks run on Python values at trace time, so a bad call fails before any compilation or training.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np


def check_coeff(coeff, name: str = "coeff") -> None:
  """Raises ``ValueError`` unless ``coeff`` is a number in the open interval (0, 1)."""
  try:
    value = float(coeff)
  except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
    return  # a traced coefficient cannot be checked here; the caller chose to trace it
  except TypeError as error:
    raise TypeError(f"{name}: expected a number in (0, 1), got {coeff!r}") from error
  if not 0.0 < value < 1.0:
    raise ValueError(
        f"{name}: expected a contraction coefficient in the open interval (0, 1), got {value}. "
        "Lip(g) < 1 is what makes x + g(x) invertible (Theorem 1).")


def check_positive_int(value, name: str) -> None:
  """Raises unless ``value`` is a Python/NumPy integer >= 1."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
    raise ValueError(f"{name}: expected a positive integer, got {value!r}")


def check_nonnegative_int(value, name: str) -> None:
  """Raises unless ``value`` is a Python/NumPy integer >= 0."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
    raise ValueError(f"{name}: expected a non-negative integer, got {value!r}")


def check_nonnegative(value, name: str) -> None:
  """Raises unless ``value`` is a finite number >= 0."""
  value_f = float(value)
  if not np.isfinite(value_f) or value_f < 0:
    raise ValueError(f"{name}: expected a finite non-negative number, got {value!r}")


def check_floating(x, name: str) -> None:
  """Raises ``TypeError`` unless ``x`` has a floating-point dtype (any of JAX's: float16/32/64, bfloat16)."""
  dtype = getattr(x, "dtype", None)
  dtype = np.result_type(x) if dtype is None else dtype
  # jnp.issubdtype knows the ml_dtypes types (bfloat16, float8...); np.issubdtype does not.
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"{name}: expected a floating-point array (float32, bfloat16, float16, float64), "
                    f"got dtype {np.dtype(dtype).name}")


def check_min_rank(x, min_rank: int, name: str, what: str = "") -> None:
  """Raises unless ``x`` has at least ``min_rank`` dimensions."""
  if np.ndim(x) < min_rank:
    raise ValueError(f"{name}: expected an array of rank >= {min_rank}{what}, got shape {np.shape(x)}")


def check_finite_if_concrete(x, name: str) -> None:
  """Raises ``ValueError`` if ``x`` holds NaN or inf; does nothing for traced values (under ``jit``)."""
  try:
    values = np.asarray(x)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return
  if not np.all(np.isfinite(values)):
    bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
    raise ValueError(f"{name}: contains {bad} NaN or infinite values")
