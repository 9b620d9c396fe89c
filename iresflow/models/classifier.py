"""``IResNetClassifier``: an i-ResNet for classification (Sec. 5.1 of Behrmann et al. 2019).

Injective zero-padding of the input channels, stages of identical i-ResNet blocks (``nn.scan``)
separated by invertible downsampling (squeeze), then a head: LayerNorm -> ReLU -> global average
pool -> linear. Everything before the head is invertible (given the padding channels are zero).
``coeff=None`` gives the unconstrained ResNet twin with the same architecture and no normalisation.

The reference code uses BatchNorm in the head; LayerNorm keeps the model free of batch statistics,
so each example's logits do not depend on the rest of the batch.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from iresflow.core import validation
from iresflow.core.logdet import accumulation_dtype
from iresflow.nn import activations
from iresflow.nn.block import LogDetOptions
from iresflow.nn.reshape import injective_pad, squeeze
from iresflow.nn.spectral import LipschitzConstraint
from iresflow.nn.step import FlowStep, scan_forward

_NO_LOGDET = LogDetOptions(mode=None)


class IResNetClassifier(nn.Module):
  """Attributes:
    num_classes: number of output classes.
    stages: blocks per stage.
    hidden: hidden channels of ``g`` per stage (or one int).
    injective_padding: zero channels appended to the input.
    kernel_sizes, activation, coeff, n_power_iterations, n_init_power_iterations,
      norm_estimator, preactivation, unroll_blocks: as in ``IResNetFlow``; ``coeff=None`` removes
      the Lipschitz constraint.
    actnorm: ActNorm before each block.
  """

  num_classes: int
  stages: Sequence[int] = (7, 7, 7)
  hidden: int | Sequence[int] = (32, 64, 128)
  injective_padding: int = 0
  kernel_sizes: Sequence[int] = (3, 1, 3)
  activation: str = "elu"
  coeff: float | None = 0.9
  n_power_iterations: int = 10
  n_init_power_iterations: int = 50
  norm_estimator: str = "lanczos"
  preactivation: bool = True
  actnorm: bool = False
  unroll_blocks: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Logits ``(batch, num_classes)`` for images ``(batch, H, W, C)``."""
    validation.check_positive_int(self.num_classes, "num_classes")
    validation.check_nonnegative_int(self.injective_padding, "injective_padding")
    constraint = LipschitzConstraint(self.coeff, self.n_power_iterations, self.n_init_power_iterations,
                                     self.norm_estimator)
    activations.check_activation(self.activation)
    validation.check_floating(x, "x")
    if x.ndim != 4:
      raise ValueError(f"x: expected images (batch, H, W, C), got shape {tuple(x.shape)}")
    hidden = (self.hidden,) * len(self.stages) if isinstance(self.hidden, int) else tuple(self.hidden)
    if len(hidden) != len(self.stages):
      raise ValueError(f"hidden: expected one width per stage ({len(self.stages)}), got {hidden}")
    factor = 2 ** (len(self.stages) - 1)
    if x.shape[1] % factor or x.shape[2] % factor:
      raise ValueError(f"x: spatial size {x.shape[1:3]} must be divisible by {factor} for "
                       f"{len(self.stages) - 1} downsamplings")
    x = injective_pad(x, self.injective_padding)
    zeros = jnp.zeros((x.shape[0],), accumulation_dtype(x.dtype))
    for i, (length, width) in enumerate(zip(self.stages, hidden)):
      validation.check_positive_int(length, "stages")
      step = FlowStep(hidden=width, kernel_sizes=tuple(self.kernel_sizes), activation=self.activation,
                      constraint=constraint, preactivation=self.preactivation, actnorm=self.actnorm,
                      name=f"stage{i}")
      x, _ = scan_forward(step, x, zeros, length, _NO_LOGDET, self.unroll_blocks)
      if i < len(self.stages) - 1:
        x = squeeze(x)
    x = nn.relu(nn.LayerNorm(name="head_norm")(x))
    return nn.Dense(self.num_classes, name="head")(jnp.mean(x, axis=(1, 2)))
