"""``IResNetClassifier``: an i-ResNet for classification (Sec. 5.1 of Behrmann et al. 2019).

Injective zero-padding of the input channels, stages of identical i-ResNet blocks (``nn.scan``)
separated by invertible downsampling (squeeze), then a head: LayerNorm -> ReLU -> global average
pool -> linear. Everything before the head is invertible (given the padding channels are zero). A
residual spec with ``LipschitzConstraint(coeff=None)`` gives the unconstrained ResNet twin with the
same architecture and no normalisation.

The reference code uses BatchNorm in the head; LayerNorm keeps the model free of batch statistics,
so each example's logits do not depend on the rest of the batch.

The classifier takes its architecture the way ``IResNetFlow`` does (``data_shape``, ``stages``,
``residual``, ``stage_hidden``, ``actnorm``, ``unroll_blocks``); ``__call__(x)`` gives the logits,
``features(x)`` the output of the invertible part, ``inverse(features)`` the images back.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from iresflow.core import loops, validation
from iresflow.models.flow import stage_specs
from iresflow.core.fixed_point import FixedPointSolver
from iresflow.nn.reshape import injective_pad, squeeze, unsqueeze
from iresflow.nn.residual import ResidualSpec
from iresflow.nn.step import BlockView, FlowStep, scan_forward, scan_inverse, stacked_block_views


class IResNetClassifier(nn.Module):
  """Attributes:
    data_shape: per-example image shape ``(H, W, C)``.
    num_classes: number of output classes.
    stages: blocks per stage.
    residual: the residual function of every block (``iresflow.nn.ResidualSpec``).
    stage_hidden: widths of ``g`` per stage, overriding ``residual.hidden``; None: the same everywhere.
    injective_padding: zero channels appended to the input.
    actnorm: ActNorm before each block.
    unroll_blocks: trace every block instead of one ``nn.scan`` body per stage (see ``IResNetFlow``).
  """

  data_shape: Sequence[int]
  num_classes: int
  stages: Sequence[int] = (7, 7, 7)
  residual: ResidualSpec = ResidualSpec()
  stage_hidden: Sequence[int] | None = None
  injective_padding: int = 0
  actnorm: bool = False
  unroll_blocks: bool | None = None

  def _check_config(self) -> None:
    loops.check_unroll(self.unroll_blocks, "unroll_blocks")
    validation.check_positive_int(self.num_classes, "num_classes")
    validation.check_nonnegative_int(self.injective_padding, "injective_padding")
    shape = tuple(self.data_shape)
    if len(shape) != 3 or any(int(n) < 1 for n in shape):
      raise ValueError(f"data_shape: expected images (H, W, C) with positive sizes, got {shape}")
    for n in self.stages:
      validation.check_positive_int(n, "stages")
    factor = 2 ** (len(self.stages) - 1)
    if shape[0] % factor or shape[1] % factor:
      raise ValueError(f"data_shape: spatial size {shape[:2]} must be divisible by {factor} for "
                       f"{len(self.stages) - 1} downsamplings")

  def stage_specs(self) -> tuple[ResidualSpec, ...]:
    """The residual function of each stage."""
    return stage_specs(self.residual, self.stage_hidden, len(self.stages))

  def stage_shapes(self) -> list[tuple[int, ...]]:
    """Per-example input shape of each stage (after the padding and the downsamplings before it)."""
    h, w, c = (int(n) for n in self.data_shape)
    shape, shapes = (h, w, c + self.injective_padding), []
    for _ in self.stages:
      shapes.append(shape)
      shape = (shape[0] // 2, shape[1] // 2, shape[2] * 4)
    return shapes

  def blocks(self, variables: dict) -> list[BlockView]:
    """Every i-ResNet block with its own variables and input shape (see ``IResNetFlow.blocks``)."""
    views = []
    for i, (spec, shape, length) in enumerate(zip(self.stage_specs(), self.stage_shapes(), self.stages)):
      views += stacked_block_views(variables, f"stage_steps_{i}", spec, shape, length, f"stage {i}")
    return views

  def setup(self):
    self._check_config()
    self.stage_steps = [FlowStep(spec, actnorm=self.actnorm) for spec in self.stage_specs()]
    self.head_norm = nn.LayerNorm()
    self.head = nn.Dense(self.num_classes)

  def feature_shape(self) -> tuple[int, ...]:
    """Per-example shape of :meth:`features`: the last stage's input shape."""
    return self.stage_shapes()[-1]

  def _check_shape(self, x: jax.Array, name: str, shape: tuple[int, ...], what: str) -> None:
    validation.check_floating(x, name)
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(shape):
      raise ValueError(f"{name}: expected {what} (batch, {', '.join(map(str, shape))}), got shape {tuple(x.shape)}")

  def features(self, x: jax.Array) -> jax.Array:
    """The invertible part: padding, stages and downsamplings; ``(batch, *feature_shape())``."""
    self._check_shape(x, "x", tuple(self.data_shape), "images")
    x = injective_pad(x, self.injective_padding)
    for i, length in enumerate(self.stages):
      x, _ = scan_forward(self.stage_steps[i], x, length, unroll=self.unroll_blocks)
      if i < len(self.stages) - 1:
        x = squeeze(x)
    return x

  def inverse(self, features: jax.Array, *, solver: FixedPointSolver = FixedPointSolver()) -> jax.Array:
    """Images from their :meth:`features`: the invertible part run backwards (Algorithm 1 per block).

    The classifier is invertible up to its head (Sec. 5.1): every block by the fixed-point iteration,
    every downsampling by the depth-to-space that undoes it, the injective padding by dropping the
    padded channels (which the inverse of exact features returns as zeros, up to the solver's
    tolerance). Every block's report is sown into ``'inverse_info'`` (see ``iresflow.nn.inverse_info``);
    without a Lipschitz constraint (the ResNet twin) nothing guarantees convergence, and the reports say so.

    Args:
      features: ``(batch, *feature_shape())``.
      solver: the fixed-point settings.

    Returns:
      Images ``(batch, *data_shape)``.
    """
    self._check_shape(features, "features", self.feature_shape(), "features")
    x = features
    for i in reversed(range(len(self.stages))):
      if i < len(self.stages) - 1:
        x = unsqueeze(x)
      x, _ = scan_inverse(self.stage_steps[i], x, self.stages[i], solver=solver, unroll=self.unroll_blocks)
    return x[..., :int(self.data_shape[-1])]

  def __call__(self, x: jax.Array) -> jax.Array:
    """Logits ``(batch, num_classes)`` for images ``(batch, *data_shape)``."""
    x = nn.relu(self.head_norm(self.features(x)))
    return self.head(jnp.mean(x, axis=(1, 2)))
