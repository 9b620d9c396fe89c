"""A flow step (ActNorm + a block: i-ResNet or Monotone) and the scans that stack identical steps.

A stage of identical steps runs under ``nn.scan``: parameters and norm-estimator state are stacked
along a leading axis, the body is traced once, so compile time does not grow with depth (the
technique of big_vision's Jet flow). The inverse runs the same stacked steps in reverse. Every
collection is scanned, none broadcast, so Flax's check that broadcast variables stay loop-invariant
(``check_constancy_invariants``: one more trace of the body) is off.
``unroll=True`` traces every step instead (compile time grows with depth; on XLA:CPU a convolutional
training step runs several times faster, docs/benchmarks.md); the default ``None`` unrolls the forward
pass on CPU only, except fully connected steps (vector inputs) with the Neumann gradient, and never
the inverse (:mod:`iresflow.core.loops`).
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from iresflow.core import estimators as estimators_lib, loops
from iresflow.core.fixed_point import FixedPointSolver
from iresflow.core.logdet import accumulation_dtype
from iresflow.nn.actnorm import ActNorm
from iresflow.nn.block import INVERSE_INFO, ContractiveBlock, IResNetBlock
from iresflow.nn.monotone import MonotoneBlock
from iresflow.nn.residual import ResidualSpec

_SCAN_AXES = {"params": 0, "spectral": 0, INVERSE_INFO: 0}

# The blocks a flow step can hold: ``'iresnet'`` (x + g(x)) or ``'monotone'`` (the Cayley transform of g).
BLOCK_TYPES = {"iresnet": IResNetBlock, "monotone": MonotoneBlock}


def check_block_type(block_type: str) -> None:
  """Raises ``ValueError`` naming the known block types unless ``block_type`` is one of them."""
  if block_type not in BLOCK_TYPES:
    raise ValueError(f"block_type: expected one of {sorted(BLOCK_TYPES)}, got {block_type!r}")


def make_block(spec: ResidualSpec, block_type: str = "iresnet", forward_solver: FixedPointSolver | None = None,
               **kwargs) -> ContractiveBlock:
  """The block of ``block_type`` on ``g = spec``; ``forward_solver`` applies to Monotone blocks only."""
  check_block_type(block_type)
  if block_type == "monotone" and forward_solver is not None:
    kwargs["forward_solver"] = forward_solver
  return BLOCK_TYPES[block_type](spec, **kwargs)


class FlowStep(nn.Module):
  """``x -> block(actnorm(x))``, with the contract of every invertible piece (see ``iresflow.nn.block``).

  Attributes:
    spec: the block's residual function.
    actnorm: ActNorm before the block.
    block_type: ``'iresnet'`` (``x + g(x)``) or ``'monotone'`` (``iresflow.nn.MonotoneBlock``).
    forward_solver: the forward solve of a Monotone block (None: the block's default).
  """

  spec: ResidualSpec = ResidualSpec()
  actnorm: bool = True
  block_type: str = "iresnet"
  forward_solver: FixedPointSolver | None = None

  def setup(self):
    self.norm = ActNorm() if self.actnorm else None
    self.block = make_block(self.spec, self.block_type, self.forward_solver)

  def __call__(self, x: jax.Array, *, context: jax.Array | None = None) -> jax.Array:
    return self.block(self.norm(x) if self.norm is not None else x, context=context)

  def forward_and_log_det(self, x: jax.Array, *, estimator: estimators_lib.LogDetEstimator,
                          context: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    total = jnp.zeros((x.shape[0],), accumulation_dtype(x.dtype))
    if self.norm is not None:
      x, total = self.norm.forward_and_log_det(x)
    y, value = self.block.forward_and_log_det(x, estimator=estimator, context=context)
    return y, total + value

  def inverse(self, y: jax.Array, *, solver: FixedPointSolver = FixedPointSolver(),
              context: jax.Array | None = None) -> jax.Array:
    x = self.block.inverse(y, solver=solver, context=context)
    return self.norm.inverse(x) if self.norm is not None else x

  def inverse_and_log_det(self, y: jax.Array, *, solver: FixedPointSolver = FixedPointSolver(),
                          estimator: estimators_lib.LogDetEstimator, context: jax.Array | None = None
                          ) -> tuple[jax.Array, jax.Array]:
    x, total = self.block.inverse_and_log_det(y, solver=solver, estimator=estimator, context=context)
    if self.norm is not None:
      x, value = self.norm.inverse_and_log_det(x)
      total = total + value
    return x, total


def _neumann_gradient(estimator) -> bool:
  """Whether ``estimator``'s log-det is differentiated by the Neumann series (recomputing ``g``)."""
  return isinstance(estimator, estimators_lib.Roulette) or getattr(estimator, "gradient", None) == "neumann"


def scan_forward(step: FlowStep, x: jax.Array, length: int, *, estimator=None, unroll: bool | None = None,
                 context: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Applies ``length`` stacked copies of ``step``; returns ``(y, summed log-det)`` (zeros without estimator).

  ``context`` (``(batch, k)`` or None) is given to every step unchanged.
  """

  def body(module: FlowStep, carry, context):
    x, total = carry
    if estimator is None:
      return (module(x, context=context), total), None
    y, value = module.forward_and_log_det(x, estimator=estimator, context=context)
    return (y, total + value), None

  # Initialisation runs once: its blocks stay rolled whatever ``unroll`` says (the same variables, a
  # fraction of the compile time of an unrolled initialisation).
  unrolled = not step.is_initializing() and loops.resolve_unroll(
      unroll, fully_connected_neumann=x.ndim == 2 and _neumann_gradient(estimator))
  run = nn.scan(body, variable_axes=_SCAN_AXES, split_rngs={"params": True, "logdet": True}, length=length,
                in_axes=nn.broadcast, unroll=length if unrolled else 1, check_constancy_invariants=False)
  total = jnp.zeros((x.shape[0],), accumulation_dtype(x.dtype))
  (y, total), _ = run(step, (x, total), context)
  return y, total


def scan_inverse(step: FlowStep, y: jax.Array, length: int, *, solver: FixedPointSolver, estimator=None,
                 unroll: bool | None = None, context: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Inverts ``length`` stacked copies of ``step`` (last first); returns ``(x, summed log-det of the inverse)``.

  ``unroll=None`` keeps the scan on every backend: each block's inverse is a ``while_loop`` anyway,
  and unrolled blocks sampled slower on a CPU too (docs/vs_normflows.md, sampling).
  """

  def body(module: FlowStep, carry, context):
    y, total = carry
    if estimator is None:
      return (module.inverse(y, solver=solver, context=context), total), None
    x, value = module.inverse_and_log_det(y, solver=solver, estimator=estimator, context=context)
    return (x, total + value), None

  run = nn.scan(body, variable_axes=_SCAN_AXES, split_rngs={"params": True, "logdet": True}, length=length,
                in_axes=nn.broadcast, reverse=True, unroll=length if unroll else 1, check_constancy_invariants=False)
  total = jnp.zeros((y.shape[0],), accumulation_dtype(y.dtype))
  (x, total), _ = run(step, (y, total), context)
  return x, total


class BlockView(NamedTuple):
  """One block of a model, on its own.

  Attributes:
    name: where it sits, e.g. ``'stage 0, block 2'``.
    block: the block's module (unbound): an ``IResNetBlock`` or a ``MonotoneBlock``.
    variables: its variables alone (``params`` and, when constrained, ``spectral``), unstacked.
    input_shape: the per-example shape of the block's input.
  """

  name: str
  block: ContractiveBlock
  variables: dict
  input_shape: tuple[int, ...]

  def residual(self, x: jax.Array) -> jax.Array:
    """``g(x)`` of this block for a batch ``x`` of shape ``(batch, *input_shape)``.

    ``view.block.apply(variables, x, method='residual')`` is the same ``g`` as a pure
    function of ``(variables, x)``, for ``jax.vmap``, ``jax.jacfwd`` and the core functions.
    """
    return self.block.apply(self.variables, x, method="residual")


def stacked_block_views(variables: Mapping, step_name: str, spec: ResidualSpec, input_shape: Sequence[int],
                        length: int, label: str, block_type: str = "iresnet",
                        forward_solver: FixedPointSolver | None = None) -> list[BlockView]:
  """The blocks of a stage of ``length`` stacked :class:`FlowStep` named ``step_name``, one view each."""
  views = []
  for index in range(length):
    block_variables = {collection: jax.tree.map(lambda a, i=index: a[i], tree[step_name]["block"])
                       for collection, tree in variables.items()
                       if collection in ("params", "spectral") and step_name in tree}
    # Detached (parent=None): not a submodule of whatever module lists it.
    block = make_block(spec, block_type, forward_solver, parent=None)
    views.append(BlockView(f"{label}, block {index}", block, block_variables, tuple(input_shape)))
  return views
