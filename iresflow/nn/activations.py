"""Activations with Lipschitz constant <= 1 for residual functions ``g``.

Certificates multiply layer norms by the activations' Lipschitz constants, so each activation here
comes with its constant. The paper (Sec. 3.2, App. C.3) advises activations with a continuous
derivative (ELU, softplus) for the power-series log-det; Residual Flows (Chen et al. 2019, Sec. 4)
introduce LipSwish, ``x * sigmoid(beta x) / 1.1``, whose derivative is bounded by 1 for every
``beta >= 0``. ReLU is allowed but its derivative jumps, which makes the estimator's gradient noisy.

i-DenseNets (Perugachi-Diaz et al. 2021, Sec. 3.3) add CLipSwish, LipSwish of the concatenation
``[x, -x]``: it doubles the last axis and keeps information that LipSwish alone squashes for negative
inputs. Its Lipschitz constant is not 1; :func:`clipswish_lipschitz_constant` computes it, and
:func:`clipswish` divides by it.

Monotone Flows (Ahn et al. 2022, Sec. 4.3) add CPila, the concatenation ``[pila(x - 0.2), pila(-x - 0.2)]``
of Pila, ``x`` for ``x > 0`` and ``(k^2 x^3 / 2 - k x^2 + x) exp(k x)`` below (k = 5): linear where
LipSwish saturates, with a derivative that dips below zero, which the authors found to improve the
gradient flow. :func:`cpila_lipschitz_constant` computes its constant and :func:`cpila` divides by it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero


def lipswish(x: jax.Array, beta: jax.typing.ArrayLike = 1.0) -> jax.Array:
  """LipSwish ``x * sigmoid(beta * x) / 1.1`` (Chen et al. 2019); 1-Lipschitz for ``beta >= 0``.

  Computed in ``x``'s dtype (``beta`` is cast to it). Differentiated by closed-form derivatives: the
  slope, and the slope's own derivative for second derivatives (backprop through the series'
  vector-Jacobian products, the Neumann gradient). A linearisation keeps one array of ``x``'s shape,
  the slope, where automatic differentiation of the formula keeps three (the sigmoid, ``x`` and
  ``beta`` broadcast to ``x``'s shape); the power series applies the same linearisation once per term.
  """
  x = jnp.asarray(x)
  return _lipswish(x, jnp.asarray(beta, x.dtype))


@jax.custom_jvp
def _lipswish(x: jax.Array, beta: jax.Array) -> jax.Array:
  return x * jax.nn.sigmoid(beta * x) / jnp.asarray(1.1, x.dtype)


@functools.partial(_lipswish.defjvp, symbolic_zeros=True)
def _lipswish_jvp(primals, tangents):
  """``d/dx = (s + beta x s (1 - s)) / 1.1`` and ``d/dbeta = x^2 s (1 - s) / 1.1`` with ``s = sigmoid(beta x)``."""
  x, beta = primals
  x_dot, beta_dot = tangents
  y = _lipswish(x, beta)
  y_dot = jnp.zeros_like(y)
  if not isinstance(x_dot, SymbolicZero):
    y_dot = _lipswish_slope(x, beta) * x_dot
  if not isinstance(beta_dot, SymbolicZero):
    s = jax.nn.sigmoid(beta * x)
    # 1/1.1 scales beta's tangent, not the array: the transpose (beta's gradient, a sum over the whole
    # array) then scales the sum, where XLA:CPU would otherwise broadcast the constant to the
    # array's shape and keep that array for the whole program.
    y_dot = y_dot + x * x * s * (1 - s) * (beta_dot / jnp.asarray(1.1, beta_dot.dtype))
  return y, y_dot


@jax.custom_jvp
def _lipswish_slope(x: jax.Array, beta: jax.Array) -> jax.Array:
  """``d lipswish / dx = (s + t s (1 - s)) / 1.1`` with ``t = beta x``, ``s = sigmoid(t)``."""
  s = jax.nn.sigmoid(beta * x)
  return (s + beta * x * s * (1 - s)) / jnp.asarray(1.1, x.dtype)


@functools.partial(_lipswish_slope.defjvp, symbolic_zeros=True)
def _lipswish_slope_jvp(primals, tangents):
  """The slope's own derivative, ``d/dt = s (1 - s) (2 + t (1 - 2 s)) / 1.1``, times ``beta`` (in x) or
  ``x`` (in beta): backprop through the series' vector-Jacobian products keeps one array for it."""
  x, beta = primals
  x_dot, beta_dot = tangents
  t = beta * x
  s = jax.nn.sigmoid(t)
  curvature_times_1_1 = s * (1 - s) * (2 + t * (1 - 2 * s))  # 1/1.1 goes on beta and its tangent, as above
  slope = (s + t * s * (1 - s)) / jnp.asarray(1.1, x.dtype)
  slope_dot = jnp.zeros_like(slope)
  if not isinstance(x_dot, SymbolicZero):
    slope_dot = curvature_times_1_1 * (beta / jnp.asarray(1.1, beta.dtype)) * x_dot
  if not isinstance(beta_dot, SymbolicZero):
    slope_dot = slope_dot + curvature_times_1_1 * x * (beta_dot / jnp.asarray(1.1, beta_dot.dtype))
  return slope, slope_dot


def _round_up_to_float32(value: float) -> float:
  """The smallest float32 >= ``value``, as a Python float: dividing by it in float32 cannot leave a
  constant above 1. NumPy, not JAX: it runs at import, before a multi-host launch starts JAX's runtime."""
  as_float32 = np.float32(value)
  return float(np.nextafter(as_float32, np.float32(2.0)) if float(as_float32) < value else as_float32)


def clipswish_lipschitz_constant() -> float:
  """The Lipschitz constant (2-norm) of ``x -> [lipswish(x), lipswish(-x)]``, for every ``beta > 0``.

  The map acts elementwise, so its Jacobian is ``[diag(a); -diag(b)]`` with ``a = s'(t)``,
  ``b = s'(-t)`` at ``t = beta x``, where ``s(t) = t sigmoid(t) / 1.1`` up to the factor ``1/beta``
  that the chain rule cancels. Its norm is ``max_i sqrt(a_i^2 + b_i^2)``. With
  ``1.1 a(t) = sigmoid(t) + t sigmoid(t) (1 - sigmoid(t))`` one has ``1.1 b(t) = 1 - 1.1 a(t)``, so
  ``sqrt(a^2 + b^2)`` grows with ``|1.1 a - 1/2|`` and is largest where ``a`` is (or, by symmetry,
  smallest): at ``a'(t) = 0``, i.e. ``t tanh(t / 2) = 2``, solved here by Newton's method in float64.
  The result is independent of ``beta`` and close to the 1.004 that Perugachi-Diaz et al. state.

  Returns:
    The constant as a Python float, rounded up to the next float32 so that dividing by it in
    float32 cannot leave a constant above 1.
  """
  t = 2.4
  for _ in range(50):  # Newton on f(t) = t tanh(t/2) - 2, f' = tanh(t/2) + t / (2 cosh^2(t/2))
    tanh = math.tanh(t / 2)
    t -= (t * tanh - 2) / (tanh + t * (1 - tanh * tanh) / 2)
  sigmoid = 1 / (1 + math.exp(-t))
  a = sigmoid + t * sigmoid * (1 - sigmoid)
  constant = math.hypot(a, 1 - a) / 1.1
  return _round_up_to_float32(constant)


CLIPSWISH_LIPSCHITZ = clipswish_lipschitz_constant()


def clipswish(x: jax.Array, beta: jax.typing.ArrayLike = 1.0) -> jax.Array:
  """CLipSwish ``[lipswish(x), lipswish(-x)] / L`` along the last axis (i-DenseNets); 1-Lipschitz.

  ``L`` is :func:`clipswish_lipschitz_constant`. The output has twice ``x``'s last dimension.
  """
  x = jnp.asarray(x)
  both = jnp.concatenate([x, -x], axis=-1)
  return lipswish(both, beta) / jnp.asarray(CLIPSWISH_LIPSCHITZ, x.dtype)


PILA_K = 5.0  # Monotone Flows' k
CPILA_SHIFT = 0.2  # Monotone Flows' shift of both halves


def pila(x: jax.Array, k: float = PILA_K) -> jax.Array:
  """Pila (Ahn et al. 2022): ``x`` for ``x > 0``, ``(k^2 x^3 / 2 - k x^2 + x) exp(k x)`` for ``x <= 0``.

  Both pieces meet with equal value (0), slope (1) and curvature (0) at 0. Its derivative below 0 is
  ``(s^3 / 2 + s^2 / 2 - s + 1) exp(s)`` with ``s = k x``; it dips to ``-19 exp(-4)`` at ``s = -4``.
  """
  x = jnp.asarray(x)
  # The negative piece on clipped input (no overflow, no NaN gradients); not jnp.minimum, whose gradient
  # at the tie x = 0 is 1/2.
  s = jnp.asarray(k, x.dtype) * jnp.where(x > 0, jnp.zeros_like(x), x)
  negative = (s * s * s / 2 - s * s + s) / jnp.asarray(k, x.dtype) * jnp.exp(s)
  return jnp.where(x > 0, x, negative)


def _pila_derivative(t: np.ndarray, k: float) -> np.ndarray:
  s = k * np.minimum(t, 0.0)
  return np.where(t > 0, 1.0, (s**3 / 2 + s**2 / 2 - s + 1) * np.exp(s))


def _upper_bound_of_maximum(f: Callable[[np.ndarray], np.ndarray], low: float, high: float, slope: float,
                            depth: int = 1, known: float = -math.inf) -> float:
  """A rigorous upper bound of ``max f`` on ``[low, high]`` for ``f`` with ``|f'| <= slope``.

  On a grid of step ``h``, ``f`` exceeds the mean of its values at the ends of a cell by at most
  ``slope * h / 2`` inside it. Cells that could hold a value above the largest one seen (``known``
  included) are refined on a finer grid, ``depth`` times (branch and bound); the others are dropped.
  """
  x = np.linspace(low, high, 4001)
  values = f(x)
  cell_bounds = (values[:-1] + values[1:]) / 2 + slope * (x[1] - x[0]) / 2
  best = max(known, float(values.max()))
  candidates = np.flatnonzero(cell_bounds > best)
  if depth == 0 or len(candidates) == 0:
    return max(best, float(cell_bounds.max()))
  return max([best] + [_upper_bound_of_maximum(f, x[i], x[i + 1], slope, depth - 1, best) for i in candidates])


def cpila_lipschitz_constant(k: float = PILA_K, shift: float = CPILA_SHIFT) -> float:
  """An upper bound on the Lipschitz constant (2-norm) of ``x -> [pila(x - shift), pila(-x - shift)]``.

  The map acts elementwise, so its Jacobian norm is ``max_x f(x)`` with
  ``f(x) = hypot(pila'(x - shift), pila'(-x - shift))``. ``f`` is bounded by branch and bound on grids
  in float64 over ``[-L, L]`` with ``L = shift + 40 / k`` (beyond it one half is linear and the other's
  slope is below ``e^-39``), using ``|f'| <= sqrt(2) max|pila''|`` with
  ``pila''(x) = k (s^3 / 2 + 2 s^2) exp(s)``, ``s = k x``. For ``k = 5, shift = 0.2`` the maximum sits
  where one half is at Pila's dip and the other in its linear part: ``sqrt(1 + 361 exp(-8)) = 1.05882``,
  which Ahn et al. round to 1.06.

  Returns:
    The bound as a Python float, rounded up to the next float32.
  """
  # |pila''| / k = |s^3/2 + 2 s^2| e^s is largest at a root of its derivative s (s^2 + 7 s + 8) e^s / 2.
  critical = ((-7 + math.sqrt(17)) / 2, (-7 - math.sqrt(17)) / 2)
  max_second = k * max(abs(s**3 / 2 + 2 * s**2) * math.exp(s) for s in critical)
  half_width = shift + 40.0 / k
  bound = _upper_bound_of_maximum(
      lambda x: np.hypot(_pila_derivative(x - shift, k), _pila_derivative(-x - shift, k)),
      -half_width, half_width, math.sqrt(2) * max_second)
  return _round_up_to_float32(bound)


CPILA_LIPSCHITZ = cpila_lipschitz_constant()


def cpila(x: jax.Array) -> jax.Array:
  """CPila ``[pila(x - 0.2), pila(-x - 0.2)] / L`` along the last axis (Monotone Flows); 1-Lipschitz.

  ``L`` is :func:`cpila_lipschitz_constant`. The output has twice ``x``'s last dimension.
  """
  x = jnp.asarray(x)
  shift = jnp.asarray(CPILA_SHIFT, x.dtype)
  both = jnp.concatenate([x - shift, -x - shift], axis=-1)
  return pila(both) / jnp.asarray(CPILA_LIPSCHITZ, x.dtype)


@dataclasses.dataclass(frozen=True)
class Activation:
  """One activation of a residual function ``g``: everything a model and a certificate need of it.

  Attributes:
    name: the name a :class:`~iresflow.nn.ResidualSpec` refers to it by.
    function: ``x -> phi(x)``, or ``(x, beta) -> phi(x)`` when ``learnable``; acts on the last axis.
    lipschitz: an upper bound on its Lipschitz constant (2-norm), for every value of ``beta``;
      certificates multiply the layers' norm bounds by it (Sec. 2.1).
    width_factor: how many times it multiplies the size of the last axis (2 for CLipSwish and CPila).
    learnable: takes a learnable slope ``beta = softplus(raw)``, ``raw`` initialised to 0.5 as in
      Residual Flows (``beta`` starts at ~0.97), one per activation of ``g``.
  """

  name: str
  function: Callable[..., jax.Array]
  lipschitz: float
  width_factor: int = 1
  learnable: bool = False

  def __call__(self, x: jax.Array, beta: jax.Array | None = None) -> jax.Array:
    return self.function(x, beta) if self.learnable else self.function(x)


_REGISTRY: dict[str, Activation] = {}

# The registered activations by name (read-only; add one with :func:`register_activation`).
ACTIVATIONS = types.MappingProxyType(_REGISTRY)


def register_activation(name: str, function: Callable[..., jax.Array], *, lipschitz: float, width_factor: int = 1,
                        learnable: bool = False, overwrite: bool = False) -> Activation:
  """Makes ``name`` usable as ``ResidualSpec(activation=name)``, in training and in ``iresflow.certify``.

  Everything is checked here, before any model is built: the name, that ``function`` maps a batch
  ``(batch, n)`` to ``(batch, width_factor * n)`` in the same dtype (traced abstractly, nothing
  runs), and that ``lipschitz`` is a finite positive number. The constant is not verified; it is
  the bound a certificate trusts, so it must hold for every input (and every ``beta``).

  Args:
    name: the activation's name.
    function: ``x -> phi(x)``, or ``(x, beta) -> phi(x)`` with ``learnable=True``.
    lipschitz: an upper bound on ``Lip(phi)`` (2-norm); 1 for the usual activations.
    width_factor: how many times ``phi`` multiplies the last axis.
    learnable: ``phi`` takes a learnable slope ``beta`` (see :class:`Activation`).
    overwrite: replace an activation already registered under ``name``.

  Returns:
    The registered :class:`Activation`.

  Raises:
    ValueError, TypeError: naming the argument that is wrong.

  Example::

    register_activation("softsign", jax.nn.soft_sign, lipschitz=1.0)
    spec = ResidualSpec(activation="softsign")
  """
  if not isinstance(name, str) or not name:
    raise TypeError(f"name: expected a non-empty string, got {name!r}")
  if name in _REGISTRY and not overwrite:
    raise ValueError(f"name: activation {name!r} is already registered; pass overwrite=True to replace it")
  if not callable(function):
    raise TypeError(f"function: expected a callable, got {function!r}")
  if isinstance(lipschitz, bool) or not isinstance(lipschitz, numbers.Real) or not 0 < lipschitz < math.inf:
    raise ValueError(f"lipschitz: expected a finite positive number (an upper bound on Lip(phi)), got {lipschitz!r}")
  if isinstance(width_factor, bool) or not isinstance(width_factor, numbers.Integral) or width_factor < 1:
    raise ValueError(f"width_factor: expected a positive integer, got {width_factor!r}")
  if not isinstance(learnable, bool):
    raise TypeError(f"learnable: expected True or False, got {learnable!r}")
  activation = Activation(name, function, float(lipschitz), int(width_factor), learnable)
  probe = jax.ShapeDtypeStruct((2, 3), jnp.float32)
  try:
    out = jax.eval_shape(activation, probe, jax.ShapeDtypeStruct((), jnp.float32) if learnable else None)
  except Exception as error:  # noqa: BLE001 -- any failure of the user's function is reported as such
    raise ValueError(f"function: could not be applied to a float32 batch of shape (2, 3)"
                     f"{' with a scalar beta' if learnable else ''}: {error}") from error
  expected = (2, 3 * activation.width_factor)
  if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != expected or out.dtype != jnp.float32:
    raise ValueError(f"function: expected an array of shape {expected} and dtype float32 for a float32 input "
                     f"of shape (2, 3) (width_factor={width_factor}), got {out}")
  _REGISTRY[name] = activation
  return activation


def get_activation(name: str) -> Activation:
  """The registered :class:`Activation` called ``name``; ``ValueError`` naming the known ones otherwise."""
  try:
    return _REGISTRY[name]
  except (KeyError, TypeError):
    raise ValueError(f"activation: expected one of {sorted(_REGISTRY)} (or one added with "
                     f"iresflow.nn.register_activation), got {name!r}") from None


def width_factor(name: str) -> int:
  """How many times activation ``name`` multiplies the size of the last axis (2 for CLipSwish and CPila, else 1)."""
  return get_activation(name).width_factor


def check_activation(name: str) -> None:
  """Raises ``ValueError`` naming the known activations unless ``name`` is registered."""
  get_activation(name)


# The built-in activations; every one is 1-Lipschitz (CLipSwish and CPila divide by their constants).
register_activation("elu", jax.nn.elu, lipschitz=1.0)
register_activation("softplus", jax.nn.softplus, lipschitz=1.0)
register_activation("lipswish", lipswish, lipschitz=1.0, learnable=True)
register_activation("clipswish", clipswish, lipschitz=1.0, width_factor=2, learnable=True)
register_activation("cpila", cpila, lipschitz=1.0, width_factor=2)
register_activation("relu", jax.nn.relu, lipschitz=1.0)
register_activation("tanh", jnp.tanh, lipschitz=1.0)
