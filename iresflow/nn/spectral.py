"""Spectrally normalised dense and convolutional layers (Sec. 2.1, eq. 2).

Each layer keeps its kernel in ``params`` and the right singular vector ``u`` of its norm estimator
in the ``spectral`` collection, shaped for the operator at the layer's real input shape (for a
convolution: the per-example ``(H, W, C)`` of its input, so the estimate is the norm of the
convolution with its padding, not of the reshaped kernel). How the layer is kept contractive is one
frozen :class:`LipschitzConstraint`.

``u`` moves only when the layer is applied with ``mutable=['spectral']`` (training): then
``constraint.n_power_iterations`` steps of the norm estimator run, warm-started from the last ``u``.
Otherwise ``u`` is read-only and ``sigma = v^T W u`` is re-evaluated at it, so evaluation (and the
certificate, which reads the same weights) is deterministic. At ``init``,
``constraint.n_init_power_iterations`` steps give training a good first estimate.

The estimate runs at full float32 matmul precision (``'highest'``) on every platform, since an
error there goes straight into ``Lip(g)`` (see :mod:`iresflow.core.precision`).

``constraint.coeff=None`` turns the normalisation off (an ordinary layer, for the unconstrained
ResNet twin).

The layers expose :meth:`normalized_weights`, which returns the weights after eq. (2) with their norm
estimate; blocks build their residual function ``g`` from these arrays as a pure function (see
``residual.py``), so the core's ``jax.vjp`` and ``lax.while_loop`` never see a Flax module.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from iresflow.core import precision, spectral, validation

NORM_ESTIMATORS = {"power": spectral.power_iteration, "lanczos": spectral.lanczos_iteration}


@dataclasses.dataclass(frozen=True)
class LipschitzConstraint:
  """How the layers of a residual function are kept contractive (eq. 2).

  Attributes:
    coeff: target norm ``c`` in (0, 1) of every layer; None for no constraint (the ResNet twin).
    n_power_iterations: steps of the norm estimator per training step (Krylov steps for ``'lanczos'``).
    n_init_power_iterations: steps at ``init``.
    norm_estimator: ``'lanczos'`` (Golub-Kahan-Lanczos, the default) or ``'power'`` (power iteration,
      the paper's, with ``n_power_iterations=1``). Spectral normalisation flattens the top of each
      layer's spectrum during training and the top direction keeps turning; one power iteration
      per step then lags below the true norm, so ``Lip(g)`` exceeds ``coeff``; Lanczos, at the same
      cost per step, keeps up (measurements in docs/reliability.md).
  """

  coeff: float | None = 0.9
  n_power_iterations: int = 10
  n_init_power_iterations: int = 50
  norm_estimator: str = "lanczos"

  def __post_init__(self):
    if self.coeff is not None:
      validation.check_coeff(self.coeff)
    validation.check_nonnegative_int(self.n_power_iterations, "n_power_iterations")
    validation.check_nonnegative_int(self.n_init_power_iterations, "n_init_power_iterations")
    if self.norm_estimator not in NORM_ESTIMATORS:
      raise ValueError(f"norm_estimator: expected one of {sorted(NORM_ESTIMATORS)}, got {self.norm_estimator!r}")


class NormalizedWeights(NamedTuple):
  """A layer's weights as the layer uses them.

  Attributes:
    kernel: the kernel after eq. (2), ``W / max(1, sigma / c)``.
    bias: the bias, or None.
    norm_estimate: the estimated operator norm of ``kernel`` (``min(sigma, c)``; a lower estimate of
      the true norm); None without a constraint.
  """

  kernel: jax.Array
  bias: jax.Array | None
  norm_estimate: jax.Array | None


def conv2d(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None) -> jax.Array:
  """Stride-1 ``SAME`` convolution of an NHWC batch with an HWIO kernel, in ``x``'s dtype."""
  y = jax.lax.conv_general_dilated(x, kernel.astype(x.dtype), (1, 1), "SAME",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return y if bias is None else y + bias.astype(x.dtype)


def dense(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None) -> jax.Array:
  """``x @ kernel + bias`` on a ``(batch, in)`` array, in ``x``'s dtype."""
  y = x @ kernel.astype(x.dtype)
  return y if bias is None else y + bias.astype(x.dtype)


def _dense_operator(kernel: jax.Array) -> spectral.LinearFn:
  """The dense layer's linear map ``u -> u @ W`` on one example ``(in_features,)``."""
  return lambda u: u @ kernel


def _conv_operator(kernel: jax.Array) -> spectral.LinearFn:
  """The convolution's linear map on one example ``(H, W, C)``, with its real ``SAME`` padding."""
  return lambda u: conv2d(u[None], kernel)[0]


@functools.partial(jax.jit, static_argnames=("operator", "norm_estimator", "n_iters"))
def estimate_operator_norm(
    kernel: jax.Array,
    u: jax.Array,
    *,
    operator: Callable[[jax.Array], spectral.LinearFn],
    norm_estimator: str,
    n_iters: int,
) -> tuple[jax.Array, jax.Array]:
  """``(sigma, u)`` of ``NORM_ESTIMATORS[norm_estimator]`` on ``operator(kernel)``, at 'highest' precision.

  Jitted with the settings static, so its program is traced once per shape and reused by every layer
  and every trace of a model (a training step, its gradient, evaluation) instead of being traced
  again inside each; applied eagerly (``init`` outside ``jit``), it runs as one compiled program
  instead of op by op. Differentiable in ``kernel`` like the estimators themselves.
  """
  # At full float32 precision: TF32 / bfloat16 matmuls would put their error into Lip(g).
  estimate = precision.with_matmul_precision(NORM_ESTIMATORS[norm_estimator], "highest")
  return estimate(operator(kernel), u, n_iters)


class _SpectralLayer(nn.Module):
  """Shared machinery: parameters, norm-estimator state and eq. (2)."""

  features: int
  constraint: LipschitzConstraint = LipschitzConstraint()
  use_bias: bool = True
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

  def _kernel_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
    raise NotImplementedError

  _operator = None  # the subclass's function ``kernel -> (u -> W u)`` on one example

  @nn.compact
  def normalized_weights(self, input_shape: Sequence[int]) -> NormalizedWeights:
    """The layer's weights after eq. (2), updating the norm estimator's state when it is mutable.

    Args:
      input_shape: per-example input shape: ``(in_features,)`` or ``(H, W, C)``.

    Returns:
      :class:`NormalizedWeights`: the kernel rescaled to estimated norm ``<= coeff``, the bias (None
      when ``use_bias=False``), and the norm estimate.
    """
    validation.check_positive_int(self.features, "features")
    input_shape = tuple(int(n) for n in input_shape)
    kernel = self.param("kernel", self.kernel_init, self._kernel_shape(input_shape))
    bias = self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else None
    coeff = self.constraint.coeff
    if coeff is None:
      return NormalizedWeights(kernel, bias, None)
    u = self.variable("spectral", "u",
                      lambda: jax.random.normal(self.make_rng("params"), input_shape, kernel.dtype))
    if u.value.shape != input_shape:
      raise ValueError(
          f"{type(self).__name__} {self.name!r}: initialised for per-example input shape "
          f"{u.value.shape} but applied to {input_shape}; the norm estimator runs on the operator at "
          "its real input shape, so re-initialise the model for the new shape.")
    if self.is_initializing():
      n_iters = self.constraint.n_init_power_iterations
    elif self.is_mutable_collection("spectral"):
      n_iters = self.constraint.n_power_iterations
    else:
      n_iters = 0
    sigma, u_new = estimate_operator_norm(kernel, u.value, operator=self._operator,
                                          norm_estimator=self.constraint.norm_estimator, n_iters=n_iters)
    if self.is_mutable_collection("spectral"):
      u.value = u_new
    return NormalizedWeights(spectral.soft_normalize(kernel, sigma, coeff), bias, jnp.minimum(sigma, coeff))


class SpectralDense(_SpectralLayer):
  """Dense layer ``x @ W + b`` with ``||W||_2 <= coeff`` (estimated).

  Input ``(batch, in_features)``, output ``(batch, features)``.
  """

  def _kernel_shape(self, input_shape):
    if len(input_shape) != 1:
      raise ValueError(f"SpectralDense: expected (batch, features) inputs, got per-example shape {input_shape}")
    return (input_shape[0], self.features)

  _operator = staticmethod(_dense_operator)

  def __call__(self, x: jax.Array) -> jax.Array:
    kernel, bias, _ = self.normalized_weights(x.shape[1:])
    return dense(x, kernel, bias)


class SpectralConv(_SpectralLayer):
  """Stride-1 ``SAME`` convolution whose operator norm at the input shape is ``<= coeff`` (estimated).

  Input ``(batch, H, W, C)``, output ``(batch, H, W, features)``; any odd or even kernel size, 1x1 too.
  """

  kernel_size: tuple[int, int] = (3, 3)

  def _kernel_shape(self, input_shape):
    if len(input_shape) != 3:
      raise ValueError(f"SpectralConv: expected (batch, H, W, C) inputs, got per-example shape {input_shape}")
    return tuple(self.kernel_size) + (input_shape[-1], self.features)

  _operator = staticmethod(_conv_operator)

  def __call__(self, x: jax.Array) -> jax.Array:
    kernel, bias, _ = self.normalized_weights(x.shape[1:])
    return conv2d(x, kernel, bias)
