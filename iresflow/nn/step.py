"""A flow step (ActNorm + i-ResNet block) and the scans that stack identical steps.

A stage of identical steps runs under ``nn.scan``: parameters and power-iteration state are stacked
along a leading axis, the body is traced once, so compile time does not grow with depth (the
technique of big_vision's Jet flow). The inverse runs the same stacked steps in reverse.
``unroll=True`` traces every step instead (compile time grows with depth): on XLA:CPU a training
step then runs several times faster, because convolutions in the backward pass of a loop body are
emitted as naive loops there (measured in docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from iresflow.core.fixed_point import FixedPointInfo
from iresflow.core.logdet import accumulation_dtype
from iresflow.nn.actnorm import ActNorm
from iresflow.nn.block import InverseOptions, IResNetBlock, LogDetOptions
from iresflow.nn.spectral import LipschitzConstraint

_SCAN_AXES = {"params": 0, "spectral": 0}


class FlowStep(nn.Module):
  """``x -> block(actnorm(x))``; attributes as in :class:`IResNetBlock`, plus ``actnorm``."""

  hidden: int = 64
  kernel_sizes: Sequence[int] = (3, 1, 3)
  activation: str = "elu"
  constraint: LipschitzConstraint = LipschitzConstraint()
  preactivation: bool = False
  actnorm: bool = True

  def setup(self):
    self.norm = ActNorm() if self.actnorm else None
    self.block = IResNetBlock(hidden=self.hidden, kernel_sizes=self.kernel_sizes, activation=self.activation,
                              constraint=self.constraint, preactivation=self.preactivation)

  def forward_and_log_det(self, x: jax.Array, logdet: LogDetOptions = LogDetOptions()
                          ) -> tuple[jax.Array, jax.Array]:
    total = jnp.zeros((x.shape[0],), accumulation_dtype(x.dtype))
    if self.norm is not None:
      x, total = self.norm.forward_and_log_det(x)
    y, value = self.block.forward_and_log_det(x, logdet)
    return y, total + value

  def inverse(self, y: jax.Array, options: InverseOptions = InverseOptions()
              ) -> tuple[jax.Array, FixedPointInfo]:
    x, info = self.block.inverse(y, options)
    if self.norm is not None:
      x = self.norm.inverse(x)
    return x, info


def merge_inverse_info(infos: FixedPointInfo, axis: int = 0) -> FixedPointInfo:
  """Summarises per-block infos stacked along ``axis``: iterations summed, worst residual, all converged."""
  return FixedPointInfo(
      iterations=jnp.sum(infos.iterations, axis=axis),
      residual=jnp.max(infos.residual, axis=axis),
      converged=jnp.all(infos.converged, axis=axis))


def scan_forward(step: FlowStep, x: jax.Array, logdet_total: jax.Array, length: int,
                 logdet: LogDetOptions, unroll: bool = False) -> tuple[jax.Array, jax.Array]:
  """Applies ``length`` stacked copies of ``step`` to ``x``, adding their log-dets to ``logdet_total``."""

  def body(module: FlowStep, carry, _):
    x, total = carry
    y, value = module.forward_and_log_det(x, logdet)
    return (y, total + value), None

  run = nn.scan(body, variable_axes=_SCAN_AXES, split_rngs={"params": True, "logdet": True}, length=length,
                unroll=length if unroll else 1)
  (x, logdet_total), _ = run(step, (x, logdet_total), None)
  return x, logdet_total


def scan_inverse(step: FlowStep, y: jax.Array, length: int, options: InverseOptions, unroll: bool = False
                 ) -> tuple[jax.Array, FixedPointInfo]:
  """Inverts ``length`` stacked copies of ``step`` (last step first); merges their inverse infos."""

  def body(module: FlowStep, y, _):
    x, info = module.inverse(y, options)
    return x, info

  run = nn.scan(body, variable_axes=_SCAN_AXES, split_rngs={"params": True}, length=length, reverse=True,
                unroll=length if unroll else 1)
  x, infos = run(step, y, None)
  return x, merge_inverse_info(infos)
