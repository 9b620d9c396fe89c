"""Certified invertibility: a rigorous upper bound on ``Lip(g)`` for every block of a trained model.

Power iteration under-estimates each layer's norm, so the normalisation of eq. (2) alone does not
guarantee ``Lip(g) < 1`` (Sec. 2.1). After training, :func:`certify` bounds every layer of every
block from above -- float64 SVD for dense layers, the FFT method of Sedghi et al. (2019) at the
layer's real input size for convolutions, or the exact norm of the materialised operator where the
input is small enough -- and combines the bounds with the activations' Lipschitz constants; for a
chain ``g`` (i-ResNets, Residual Flows)

    Lip(g) <= prod_i ||W_hat_i||_2 * prod_j Lip(phi_j),

for i-DenseNets' DenseNet ``g`` the concatenations enter too (``ResidualSpec.lipschitz_bound``).
``W_hat_i`` is the weight the model actually uses: the certificate asks each block for its
layers (``normalized_layers``, eq. 2 with the stored norm-estimator state, computed by
the layers' own code at ``'highest'`` matmul precision) and concatenation weights, so what is
certified is what is in use. It finds the blocks through the model (``model.blocks(variables)``),
not by parameter names. A block is certified when the bound is ``< 1``; then an i-ResNet block is
invertible (Theorem 1) and its fixed-point inverse converges (eq. 1), and so do both solves of a
Monotone block.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import numpy as np

from iresflow.core import spectral
from iresflow.nn.spectral import NormalizedWeights
from iresflow.nn.step import BlockView


# A convolution gets the exact norm when the smaller of its input and output has at most ``exact_max_dim``
# dimensions and the larger at most this many times that (the materialised matrix's memory).
EXACT_MAX_RATIO = 16

BOUND_METHODS = {
    "svd": "float64 SVD of the dense kernel",
    "exact": "float64 SVD of the convolution's materialised matrix",
    "fft": "the FFT bound of Sedghi et al. (2019) on the zero-padded grid",
}


@dataclasses.dataclass(frozen=True)
class LayerBound:
  """One linear layer of ``g``: its estimated and certified operator norms (after eq. 2).

  Attributes:
    name: ``'layer0'``, ``'layer1'``, ...
    estimate: the norm estimator's value (a lower estimate of the true norm).
    bound: a rigorous upper bound on the true norm.
    method: how ``bound`` was computed, a key of :data:`BOUND_METHODS`.
  """

  name: str
  estimate: float
  bound: float
  method: str = "svd"


@dataclasses.dataclass(frozen=True)
class BlockCertificate:
  """One block ``x + g(x)``.

  Attributes:
    name: where the block sits in the model, e.g. ``'stage 0, block 2'``.
    layers: the layers of ``g`` in order.
    activation_lipschitz: product of the activations' Lipschitz constants.
    lipschitz_bound: rigorous bound from the layer bounds (``ResidualSpec.lipschitz_bound``: for a chain
      ``prod(layer bounds) * activation_lipschitz``; a DenseNet ``g`` also weighs in its concatenations).
    lipschitz_estimate: the same with the layers' norm estimates (a lower estimate).
  """

  name: str
  layers: tuple[LayerBound, ...]
  activation_lipschitz: float
  lipschitz_bound: float
  lipschitz_estimate: float

  @property
  def certified(self) -> bool:
    return self.lipschitz_bound < 1.0

  def diagnosis(self) -> str:
    """Why the block is not certified (empty when it is): which part of the bound reaches 1, and what to do."""
    if self.certified:
      return ""
    if self.lipschitz_estimate >= 1.0:
      return (f"even the norm estimates give Lip(g) <= {self.lipschitz_estimate:.5f}: the constraint itself allows "
              f"Lip(g) >= 1 (activations' Lipschitz constants multiply to {self.activation_lipschitz:.5f}); "
              "lower coeff")
    worst = max(self.layers, key=lambda layer: layer.bound / max(layer.estimate, 1e-30))
    gap = worst.bound / max(worst.estimate, 1e-30) - 1
    if worst.method == "fft":
      return (f"{worst.name}'s bound {worst.bound:.5f} ({BOUND_METHODS['fft']}) is {gap:.1%} above its estimate "
              f"{worst.estimate:.5f}; that bound is loose for zero padding: certify with a larger exact_max_dim "
              "(the exact norm of the materialised convolution) or lower coeff")
    return (f"{worst.name}'s true norm is {worst.bound:.5f} ({BOUND_METHODS[worst.method]}), {gap:.1%} above its "
            f"estimate {worst.estimate:.5f}: the norm estimator has not converged; run more of its steps "
            "(LipschitzConstraint.n_power_iterations / n_init_power_iterations, or the trainer's "
            "eval_refresh_iterations)")


@dataclasses.dataclass(frozen=True)
class Certificate:
  """All blocks of a model; ``certified`` when every block's bound is below 1."""

  blocks: tuple[BlockCertificate, ...]

  @property
  def certified(self) -> bool:
    return all(block.certified for block in self.blocks)

  @property
  def max_lipschitz_bound(self) -> float:
    return max(block.lipschitz_bound for block in self.blocks)

  def table(self) -> str:
    """A text table: one row per block, bound, estimate and verdict."""
    rows = [f"{'block':<40} {'Lip bound':>10} {'estimate':>10}  verdict"]
    for block in self.blocks:
      verdict = "certified < 1" if block.certified else "NOT certified"
      rows.append(f"{block.name:<40} {block.lipschitz_bound:>10.5f} {block.lipschitz_estimate:>10.5f}  {verdict}")
      if not block.certified:
        rows.append(f"  why: {block.diagnosis()}")
    rows.append(f"{len(self.blocks)} blocks, max bound {self.max_lipschitz_bound:.5f}: "
                f"{'all certified' if self.certified else 'NOT all certified'}")
    return "\n".join(rows)

  def to_dict(self) -> dict:
    return {"certified": self.certified, "max_lipschitz_bound": self.max_lipschitz_bound,
            "blocks": [dataclasses.asdict(block) | {"certified": block.certified} for block in self.blocks]}


def normalized_layers(view: BlockView) -> tuple[NormalizedWeights, ...]:
  """The layers of one block's ``g`` exactly as the block uses them (its own code, spectral state read-only)."""
  return view.block.apply(view.variables, view.input_shape, method="normalized_layers")


def concat_weights(view: BlockView) -> tuple[np.ndarray, ...]:
  """A DenseNet ``g``'s concatenation weights ``(eta_1, eta_2)`` per layer, as the block uses them; ``()`` else."""
  weights = view.block.apply(view.variables, view.input_shape, method="concat_weights")
  return tuple(np.asarray(jax.device_get(w), np.float64) for w in weights)


def _layer_bound(weights: NormalizedWeights, input_shape: tuple[int, ...], exact_max_dim: int
                 ) -> tuple[float, str]:
  """Rigorous float64 upper bound on the operator norm of one normalised layer at its input shape, and
  the method (a key of :data:`BOUND_METHODS`)."""
  kernel = np.asarray(jax.device_get(weights.kernel), np.float64)
  if kernel.ndim == 2:
    return spectral.dense_norm_bound(kernel), "svd"
  h, w = input_shape[:2]
  smaller, larger = sorted(h * w * c for c in kernel.shape[2:])
  # The SVD costs (larger) * (smaller)^2: the smaller side decides; the larger is capped for memory.
  if smaller <= exact_max_dim and larger <= EXACT_MAX_RATIO * exact_max_dim:
    return spectral.conv_operator_norm(kernel, (h, w)), "exact"
  return spectral.conv_norm_bound(kernel, (h, w), "SAME"), "fft"


def certify_block(view: BlockView, *, exact_max_dim: int = 2048) -> BlockCertificate:
  """Certificate of one block (see :func:`certify`)."""
  spec = view.block.spec
  if spec.constraint.coeff is None:
    raise ValueError(f"model: block {view.name!r} has no Lipschitz constraint (coeff=None); there is nothing "
                     "to certify")
  if "spectral" not in view.variables:
    raise ValueError("variables: no 'spectral' collection; pass the full variables from model.init")
  layers = []
  for i, weights in enumerate(normalized_layers(view)):
    # Stride-1 SAME convolutions keep the spatial size, so every layer sees the block's input grid.
    bound, method = _layer_bound(weights, view.input_shape, exact_max_dim)
    layers.append(LayerBound(f"layer{i}", float(weights.norm_estimate), bound, method))
  etas = concat_weights(view) if spec.architecture == "densenet" else ()  # a chain has none: skip building g
  return BlockCertificate(
      name=view.name, layers=tuple(layers), activation_lipschitz=spec.activation_lipschitz(view.input_shape),
      lipschitz_bound=spec.lipschitz_bound(view.input_shape, [layer.bound for layer in layers], etas),
      lipschitz_estimate=spec.lipschitz_bound(view.input_shape, [layer.estimate for layer in layers], etas))


def certify(model: Any, variables: Mapping, *, exact_max_dim: int = 2048) -> Certificate:
  """Certifies ``Lip(g) < 1`` for every block of an ``IResNetFlow`` or ``IResNetClassifier``.

  Args:
    model: the module; any module with a ``blocks(variables)`` method listing its blocks.
    variables: its variables, with ``'params'`` and ``'spectral'``.
    exact_max_dim: convolutions whose input or output (the smaller of the two) has at most this many
      dimensions, and the other at most ``EXACT_MAX_RATIO`` times as many, get the exact norm of their
      materialised matrix (float64 SVD, cost ``larger * smaller**2``); others the FFT bound, which is
      loose for zero padding on small grids.

  Returns:
    A :class:`Certificate` with one entry per block, in forward order.

  Raises:
    ValueError: if the model has no Lipschitz constraint (``coeff=None``) or no spectral state.
  """
  if not callable(getattr(model, "blocks", None)):
    raise TypeError(f"model: expected a model with a blocks(variables) method (IResNetFlow, IResNetClassifier), "
                    f"got {type(model).__name__}")
  if "spectral" not in variables:
    if any(view.block.spec.constraint.coeff is None for view in model.blocks(variables)):
      raise ValueError("model: has no Lipschitz constraint (coeff=None); there is nothing to certify")
    raise ValueError("variables: no 'spectral' collection; pass the full variables from model.init")
  views = model.blocks(variables)
  if not views:
    raise ValueError("model: has no i-ResNet blocks")
  return Certificate(tuple(certify_block(view, exact_max_dim=exact_max_dim) for view in views))
