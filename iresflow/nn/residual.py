"""The residual function ``g`` of an i-ResNet block: one frozen description, and the module that builds it.

:class:`ResidualSpec` says everything about ``g``: its width, its layers, its activation and the
:class:`~iresflow.nn.spectral.LipschitzConstraint` of every layer. Models pass one spec down to their
blocks; there is one set of defaults, here.

Images (per-example ``(H, W, C)``): ``g = W_n phi(... phi(W_1 x))`` with one convolution per entry of
``kernel_sizes`` (default 3x3 -> 1x1 -> 3x3, the shape of the official code and Residual Flows, Sec.
2.1), hidden width ``hidden``, output with the input's channels. Vectors (``(d,)``): the same with
``dense_layers`` dense layers. ``preactivation=True`` applies ``phi`` to the input first, as the
reference implementations do for every block after the first.

``Lip(g) <= prod_i ||W_i|| * Lip(phi)^(number of activations)``, at most ``coeff ** n_layers`` once the
norm estimates have converged; ``iresflow.certify`` checks it rigorously.

:meth:`ContractiveResidual.residual_function` runs the spectral normalisation once (updating the norm
estimator's state if it is mutable) and returns ``g`` as a closure over the normalised arrays: the
core functions can then ``jax.vjp`` it, loop over it, and differentiate it freely.
:meth:`ContractiveResidual.normalized_layers` returns those arrays, for certificates.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import flax.linen as nn
import jax

from iresflow.core import validation
from iresflow.nn import activations
from iresflow.nn.spectral import LipschitzConstraint, NormalizedWeights, SpectralConv, SpectralDense, conv2d, dense

ResidualFn = Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class ResidualSpec:
  """What the residual function ``g`` of a block is.

  Attributes:
    hidden: width of the hidden layers (channels for images).
    kernel_sizes: images: the spatial kernel size of each convolution; its length is the number of
      layers.
    dense_layers: vectors: the number of dense layers.
    activation: one of ``iresflow.nn.activations.ACTIVATIONS`` (``'lipswish'``, Residual Flows', or
      ``'elu'``, the i-ResNet paper's, ...).
    preactivation: apply the activation to the input before the first layer.
    constraint: how every layer is kept contractive (eq. 2); ``LipschitzConstraint(coeff=None)`` for
      an unconstrained residual function.
  """

  hidden: int = 64
  kernel_sizes: tuple[int, ...] = (3, 1, 3)
  dense_layers: int = 3
  activation: str = "lipswish"
  preactivation: bool = True
  constraint: LipschitzConstraint = LipschitzConstraint()

  def __post_init__(self):
    object.__setattr__(self, "kernel_sizes", tuple(int(k) for k in self.kernel_sizes))
    validation.check_positive_int(self.hidden, "hidden")
    validation.check_positive_int(self.dense_layers, "dense_layers")
    if not self.kernel_sizes:
      raise ValueError("kernel_sizes: expected at least one layer")
    for size in self.kernel_sizes:
      validation.check_positive_int(size, "kernel_sizes")
    activations.check_activation(self.activation)
    if not isinstance(self.constraint, LipschitzConstraint):
      raise TypeError(f"constraint: expected a LipschitzConstraint, got {self.constraint!r}")

  def n_layers(self, input_shape: Sequence[int]) -> int:
    """Number of linear layers of ``g`` for per-example inputs of ``input_shape``."""
    return len(self.kernel_sizes) if len(input_shape) == 3 else self.dense_layers

  def activation_lipschitz(self, input_shape: Sequence[int]) -> float:
    """Product of the Lipschitz constants of the activations applied in ``g``."""
    n_activations = self.n_layers(input_shape) - 1 + int(self.preactivation)
    return activations.LIPSCHITZ_CONSTANTS[self.activation] ** n_activations


class ContractiveResidual(nn.Module):
  """The residual function ``g`` with ``Lip(g) < 1``, described by a :class:`ResidualSpec`."""

  spec: ResidualSpec = ResidualSpec()

  @nn.compact
  def _build(self, input_shape: Sequence[int]) -> tuple[ResidualFn, tuple[NormalizedWeights, ...]]:
    spec = self.spec
    input_shape = tuple(int(n) for n in input_shape)
    if len(input_shape) not in (1, 3):
      raise ValueError(f"x: expected (batch, H, W, C) images or (batch, d) vectors, got per-example "
                       f"shape {input_shape}")
    image = len(input_shape) == 3
    n_layers = spec.n_layers(input_shape)
    widths = [spec.hidden] * (n_layers - 1) + [input_shape[-1]]
    layers, betas, shape = [], [], input_shape
    for i, width in enumerate(widths):
      common = dict(features=width, constraint=spec.constraint, name=f"layer{i}")
      if image:
        size = spec.kernel_sizes[i]
        layer = SpectralConv(kernel_size=(size, size), **common)
      else:
        layer = SpectralDense(**common)
      layers.append(layer.normalized_weights(shape))
      shape = shape[:-1] + (width,)
      if (i > 0 or spec.preactivation) and spec.activation in activations.LEARNABLE:
        raw = self.param(f"beta{i}", nn.initializers.constant(0.5), ())
        betas.append(jax.nn.softplus(raw))
      else:
        betas.append(None)
    phi = activations.ACTIVATIONS[spec.activation]
    apply_layer = conv2d if image else dense
    preactivation = spec.preactivation

    def g(x: jax.Array) -> jax.Array:
      h = x
      for i, (weights, beta) in enumerate(zip(layers, betas)):
        if i > 0 or preactivation:
          h = phi(h) if beta is None else phi(h, beta)
        h = apply_layer(h, weights.kernel, weights.bias)
      return h

    return g, tuple(layers)

  def residual_function(self, input_shape: Sequence[int]) -> ResidualFn:
    """``g`` for per-example inputs of ``input_shape``: a pure function ``(batch, *input_shape) -> same``."""
    return self._build(input_shape)[0]

  def normalized_layers(self, input_shape: Sequence[int]) -> tuple[NormalizedWeights, ...]:
    """The weights of every layer of ``g`` as ``g`` uses them (after eq. 2), in order."""
    return self._build(input_shape)[1]

  def __call__(self, x: jax.Array) -> jax.Array:
    """``g(x)`` for a batch ``x``."""
    return self.residual_function(x.shape[1:])(x)
