"""The residual function ``g`` of an i-ResNet block, returned as a pure JAX function.

Images (per-example ``(H, W, C)``): ``g = W_3 phi(W_2 phi(W_1 x))`` with kernels 3x3 -> 1x1 -> 3x3 by
default (Sec. 2.1; the official code and Residual Flows use this shape), hidden width ``hidden``, and
an output with the input's channels. Vectors (``(d,)``): the same with dense layers, one per entry of
``kernel_sizes`` (the sizes themselves are ignored). ``preactivation=True`` applies ``phi`` to the
input first, as the reference implementations do for every block after the first.

``Lip(g) <= prod_i ||W_i|| * prod Lip(phi) <= coeff ** len(kernel_sizes)`` once the power iteration
has converged (``coeff`` per layer); ``certify`` checks it rigorously.

:meth:`ContractiveResidual.residual_function` runs the spectral normalisation once (updating the
power-iteration state if it is mutable) and returns ``g`` as a closure over the normalised arrays:
the core functions can then ``jax.vjp`` it, loop over it, and differentiate it freely.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax

from iresflow.core import validation
from iresflow.nn import activations
from iresflow.nn.spectral import LipschitzConstraint, SpectralConv, SpectralDense, conv2d, dense


class ContractiveResidual(nn.Module):
  """The residual function ``g`` with ``Lip(g) < 1``.

  Attributes:
    hidden: width of the hidden layers (channels for images).
    kernel_sizes: spatial kernel size of each layer; its length is the number of layers.
    activation: one of ``activations.ACTIVATIONS``.
    constraint: spectral normalisation of every layer (``coeff``, power iterations).
    preactivation: apply the activation to the input before the first layer.
  """

  hidden: int = 64
  kernel_sizes: Sequence[int] = (3, 1, 3)
  activation: str = "elu"
  constraint: LipschitzConstraint = LipschitzConstraint()
  preactivation: bool = False

  @nn.compact
  def residual_function(self, input_shape: Sequence[int]) -> Callable[[jax.Array], jax.Array]:
    """Builds ``g`` for per-example inputs of ``input_shape``.

    Args:
      input_shape: ``(H, W, C)`` for images or ``(d,)`` for vectors.

    Returns:
      A pure function mapping ``(batch, *input_shape)`` to the same shape.
    """
    activations.check_activation(self.activation)
    validation.check_positive_int(self.hidden, "hidden")
    if len(self.kernel_sizes) < 1:
      raise ValueError("kernel_sizes: expected at least one layer")
    input_shape = tuple(int(n) for n in input_shape)
    if len(input_shape) == 3:
      image = True
    elif len(input_shape) == 1:
      image = False
    else:
      raise ValueError(f"x: expected (batch, H, W, C) images or (batch, d) vectors, got per-example "
                       f"shape {input_shape}")
    n_layers = len(self.kernel_sizes)
    widths = [self.hidden] * (n_layers - 1) + [input_shape[-1]]
    weights, betas, shape = [], [], input_shape
    for i, (size, width) in enumerate(zip(self.kernel_sizes, widths)):
      common = dict(features=width, name=f"layer{i}", **self.constraint.layer_kwargs())
      layer = SpectralConv(kernel_size=(size, size), **common) if image else SpectralDense(**common)
      weights.append(layer.normalized_weights(shape))
      shape = shape[:-1] + (width,)
      if (i > 0 or self.preactivation) and self.activation in activations.LEARNABLE:
        raw = self.param(f"beta{i}", nn.initializers.constant(0.5), ())
        betas.append(jax.nn.softplus(raw))
      else:
        betas.append(None)
    phi = activations.ACTIVATIONS[self.activation]
    apply_layer = conv2d if image else dense
    preactivation = self.preactivation

    def g(x: jax.Array) -> jax.Array:
      h = x
      for i, ((kernel, bias), beta) in enumerate(zip(weights, betas)):
        if i > 0 or preactivation:
          h = phi(h) if beta is None else phi(h, beta)
        h = apply_layer(h, kernel, bias)
      return h

    return g

  def __call__(self, x: jax.Array) -> jax.Array:
    """``g(x)`` for a batch ``x``."""
    return self.residual_function(x.shape[1:])(x)
