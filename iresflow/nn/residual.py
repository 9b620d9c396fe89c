"""The residual function ``g`` of a block: one frozen description, and the module that builds it.

:class:`ResidualSpec` says everything about ``g``: its width, its layers, its activation and the
:class:`~iresflow.nn.spectral.LipschitzConstraint` of every layer. Models pass one spec down to their
blocks; there is one set of defaults, here.

Two architectures:

* **chain** (i-ResNets, Residual Flows): images (per-example ``(H, W, C)``):
  ``g = W_n phi(... phi(W_1 x))`` with one convolution per entry of ``kernel_sizes`` (default 3x3 ->
  1x1 -> 3x3, the shape of the official code and Residual Flows, Sec. 2.1), hidden width ``hidden``,
  output with the input's channels. Vectors (``(d,)``): the same with ``dense_layers`` dense layers.
  ``Lip(g) <= prod_i ||W_i|| * Lip(phi)^(number of activations)``, at most ``coeff ** n_layers``.
* **densenet** (i-DenseNets, Perugachi-Diaz et al. 2021, Sec. 3): every layer but the last
  concatenates its input with a transform of it, ``h <- [eta_1 h, eta_2 phi(W h)]`` (``W`` maps to
  ``hidden`` channels, the growth), and the last layer projects the concatenation back to the
  input's width. The learnable weights satisfy ``eta_1^2 + eta_2^2 = 1``, so a concatenation has
  ``Lip <= sqrt(eta_1^2 + eta_2^2 (Lip(phi) ||W||)^2) <= 1``, and
  ``Lip(g) <= ||W_n|| * prod_{i<n} sqrt(eta_1,i^2 + eta_2,i^2 (Lip(phi) ||W_i||)^2)``
  (:meth:`ResidualSpec.lipschitz_bound`).

Conditional ``g(x, c)``: given a context ``c`` (shape ``(batch, k)``), a learned linear embedding of ``c``
is added to the input of every activation (each layer's pre-activation; for images broadcast over
space). ``c`` then only shifts the activations' inputs, so ``Lip_x(g(., c))`` has the same bound for
every ``c`` and the certificate of the unconditional ``g`` certifies every conditional one.

``preactivation=True`` applies ``phi`` to the input first, as the reference implementations do for
every block after the first. CLipSwish and CPila (``activation='clipswish'`` or ``'cpila'``) double the
channels they are applied to; the layers' widths follow. ``iresflow.certify`` bounds ``Lip(g)`` rigorously.

:meth:`ContractiveResidual.residual_function` runs the spectral normalisation once (updating the norm
estimator's state if it is mutable) and returns ``g`` as a closure over the normalised arrays: the
core functions can then ``jax.vjp`` it, loop over it, and differentiate it freely.
:meth:`ContractiveResidual.normalized_layers` returns those arrays and
:meth:`ContractiveResidual.concat_weights` the concatenation weights, for certificates.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from iresflow.core import validation
from iresflow.nn import activations
from iresflow.nn.spectral import LipschitzConstraint, NormalizedWeights, SpectralConv, SpectralDense, conv2d, dense

ResidualFn = Callable[[jax.Array], jax.Array]


ARCHITECTURES = ("chain", "densenet")


@dataclasses.dataclass(frozen=True)
class ResidualSpec:
  """What the residual function ``g`` of a block is.

  Attributes:
    hidden: width of the hidden layers (channels for images); for ``'densenet'``, the growth: the
      channels each concatenating layer's convolution adds (twice that after CLipSwish).
    kernel_sizes: images: the spatial kernel size of each convolution; its length is the number of
      layers.
    dense_layers: vectors: the number of dense layers.
    activation: the name of a registered activation (``iresflow.nn.ACTIVATIONS``: ``'lipswish'``,
      Residual Flows', ``'elu'``, the i-ResNet paper's, ``'clipswish'``, i-DenseNets', ``'cpila'``,
      Monotone Flows', ...; add your own with ``iresflow.nn.register_activation``).
    preactivation: apply the activation to the input before the first layer.
    constraint: how every layer is kept contractive (eq. 2); ``LipschitzConstraint(coeff=None)`` for
      an unconstrained residual function.
    architecture: ``'chain'`` (layer after layer) or ``'densenet'`` (i-DenseNets' Lipschitz
      DenseNet: concatenating layers, then a projection back to the input's width).
  """

  hidden: int = 64
  kernel_sizes: tuple[int, ...] = (3, 1, 3)
  dense_layers: int = 3
  activation: str = "lipswish"
  preactivation: bool = True
  constraint: LipschitzConstraint = LipschitzConstraint()
  architecture: str = "chain"

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
    if self.architecture not in ARCHITECTURES:
      raise ValueError(f"architecture: expected one of {ARCHITECTURES}, got {self.architecture!r}")

  def n_layers(self, input_shape: Sequence[int]) -> int:
    """Number of linear layers of ``g`` for per-example inputs of ``input_shape``."""
    return len(self.kernel_sizes) if len(input_shape) == 3 else self.dense_layers

  def activation_lipschitz(self, input_shape: Sequence[int]) -> float:
    """Product of the Lipschitz constants of the activations applied in ``g`` (one per layer but the last,
    and one more with ``preactivation``)."""
    n_activations = self.n_layers(input_shape) - 1 + int(self.preactivation)
    return activations.get_activation(self.activation).lipschitz ** n_activations

  def lipschitz_bound(self, input_shape: Sequence[int], layer_norms: Sequence[float],
                      concat_weights: Sequence[Sequence[float]] = ()) -> float:
    """An upper bound on ``Lip(g)`` from upper bounds on its layers' operator norms (float64).

    Args:
      input_shape: per-example input shape of ``g``.
      layer_norms: one bound per linear layer, in order (``n_layers`` of them).
      concat_weights: ``'densenet'``: the ``(eta_1, eta_2)`` of every concatenating layer, as ``g``
        uses them (:meth:`ContractiveResidual.concat_weights`); ignored for ``'chain'``.

    Returns:
      ``prod(layer_norms) * activation_lipschitz`` for a chain; for a DenseNet
      ``Lip(phi)^[preactivation] * ||W_n|| * prod_{i<n} sqrt(eta_1,i^2 + eta_2,i^2 (Lip(phi) ||W_i||)^2)``.
    """
    norms = np.asarray(layer_norms, np.float64)
    n_layers = self.n_layers(input_shape)
    if norms.shape != (n_layers,):
      raise ValueError(f"layer_norms: expected {n_layers} norms, got {norms.shape}")
    if self.architecture == "chain":
      return float(np.prod(norms)) * self.activation_lipschitz(input_shape)
    weights = np.asarray(concat_weights, np.float64).reshape(-1, 2)
    if weights.shape[0] != n_layers - 1:
      raise ValueError(f"concat_weights: expected {n_layers - 1} pairs (eta_1, eta_2), got {weights.shape[0]}")
    phi = activations.get_activation(self.activation).lipschitz
    per_layer = np.sqrt(weights[:, 0]**2 + weights[:, 1]**2 * (phi * norms[:-1])**2)
    return float(np.prod(per_layer) * norms[-1] * (phi if self.preactivation else 1.0))


class ContractiveResidual(nn.Module):
  """The residual function ``g`` with ``Lip(g) < 1``, described by a :class:`ResidualSpec`."""

  spec: ResidualSpec = ResidualSpec()

  @nn.compact
  def _build(self, input_shape: Sequence[int], context: jax.Array | None = None
             ) -> tuple[ResidualFn, tuple[NormalizedWeights, ...], tuple[jax.Array, ...]]:
    spec = self.spec
    input_shape = tuple(int(n) for n in input_shape)
    if len(input_shape) not in (1, 3):
      raise ValueError(f"x: expected (batch, H, W, C) images or (batch, d) vectors, got per-example "
                       f"shape {input_shape}")
    image = len(input_shape) == 3
    n_layers = spec.n_layers(input_shape)
    densenet = spec.architecture == "densenet"
    phi = activations.get_activation(spec.activation)
    factor = phi.width_factor

    def activation_beta(name: str):
      if not phi.learnable:
        return None
      return jax.nn.softplus(self.param(name, nn.initializers.constant(0.5), ()))

    def embed(name: str, width: int) -> jax.Array | float:
      """The context's shift of an activation's input of ``width`` channels (0 without context)."""
      if context is None:
        return 0.0
      shift = nn.Dense(width, name=name)(context)
      return shift.reshape((shift.shape[0],) + (1,) * (len(input_shape) - 1) + (width,))

    def make_layer(i: int, width: int, in_shape: tuple[int, ...]) -> NormalizedWeights:
      common = dict(features=width, constraint=spec.constraint, name=f"layer{i}")
      if image:
        size = spec.kernel_sizes[i]
        return SpectralConv(kernel_size=(size, size), **common).normalized_weights(in_shape)
      return SpectralDense(**common).normalized_weights(in_shape)

    # Activation before layer i (chain: i > 0, or i = 0 with preactivation); DenseNet: after each
    # concatenating layer i, and before the first one with preactivation.
    layers, betas, concat, shifts = [], [], [], []
    width = input_shape[-1]
    pre_beta, pre_shift = None, 0.0
    if spec.preactivation:
      pre_beta = activation_beta("beta0")
      pre_shift = embed("context_pre", width)
      width *= factor
    for i in range(n_layers):
      last = i == n_layers - 1
      out_width = input_shape[-1] if last else spec.hidden
      if not densenet and i > 0:
        betas.append(activation_beta(f"beta{i}"))
        width *= factor
      layers.append(make_layer(i, out_width, input_shape[:-1] + (width,)))
      if not last:  # the input of the activation after this layer
        shifts.append(embed(f"context{i}", out_width))
      if densenet and not last:
        betas.append(activation_beta(f"beta{i + 1}"))
        raw = jax.nn.softplus(self.param(f"concat{i}", nn.initializers.zeros, (2,)))
        concat.append(raw / jnp.sqrt(jnp.sum(raw**2)))
        width += out_width * factor
      elif not densenet:
        width = out_width
    apply_layer = conv2d if image else dense

    def shifted(h: jax.Array, shift) -> jax.Array:
      return h if context is None else h + shift.astype(h.dtype)

    def g_chain(x: jax.Array) -> jax.Array:
      h = phi(shifted(x, pre_shift), pre_beta) if spec.preactivation else x
      for i, weights in enumerate(layers):
        if i > 0:
          h = phi(shifted(h, shifts[i - 1]), betas[i - 1])
        h = apply_layer(h, weights.kernel, weights.bias)
      return h

    def g_densenet(x: jax.Array) -> jax.Array:
      h = phi(shifted(x, pre_shift), pre_beta) if spec.preactivation else x
      for weights, beta, eta, shift in zip(layers[:-1], betas, concat, shifts):
        grown = phi(shifted(apply_layer(h, weights.kernel, weights.bias), shift), beta)
        h = jnp.concatenate([eta[0].astype(h.dtype) * h, eta[1].astype(h.dtype) * grown], axis=-1)
      return apply_layer(h, layers[-1].kernel, layers[-1].bias)

    return (g_densenet if densenet else g_chain), tuple(layers), tuple(concat)

  def residual_function(self, input_shape: Sequence[int], context: jax.Array | None = None) -> ResidualFn:
    """``g`` for per-example inputs of ``input_shape``: a pure function ``(batch, *input_shape) -> same``.

    Args:
      input_shape: the per-example shape of ``x``.
      context: None, or ``(batch, k)``: ``g(., c)`` for this batch's contexts (the function then
        takes batches of exactly ``batch`` examples, the ``i``-th with context ``c_i``).
    """
    return self._build(input_shape, context)[0]

  def normalized_layers(self, input_shape: Sequence[int]) -> tuple[NormalizedWeights, ...]:
    """The weights of every layer of ``g`` as ``g`` uses them (after eq. 2), in order."""
    return self._build(input_shape)[1]

  def concat_weights(self, input_shape: Sequence[int]) -> tuple[jax.Array, ...]:
    """``'densenet'``: the ``(eta_1, eta_2)`` of every concatenating layer, shape ``(2,)`` each; ``()`` for a chain."""
    return self._build(input_shape)[2]

  def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
    """``g(x)`` (or ``g(x, c)``) for a batch ``x``."""
    return self.residual_function(x.shape[1:], context)(x)
