"""``IResNetFlow``: the i-ResNet density model (Sec. 3 of Behrmann et al. 2019).

``log p(x) = log p_z(F(x)) + sum_t log det J_{F_t}`` (eq. 3), with ``F`` a stack of flow steps
(ActNorm + i-ResNet block). Samples are ``F^{-1}(z)`` for ``z`` from the prior, by Algorithm 1 per
block.

Images ``(H, W, C)``: an optional initial squeeze, then stages of identical steps (one ``nn.scan``
each) separated by squeezes, optionally factoring out half the channels after each squeeze, then
optional fully connected steps on the flattened result. Vectors ``(d,)``: fully connected steps only
(``stages=()``).

The latent ``z`` is returned flat, ``(batch, D)`` with ``D = prod(data_shape)``: factored-out parts
first, in order, then the final output.

Conditional flows (``context_size = k > 0``) model ``p(x | c)`` for a context ``c`` of shape ``(k,)``
per example: every method takes ``context=`` of shape ``(batch, k)``; an optional MLP
(``context_encoder``) embeds ``c`` once, and every block adds a learned linear embedding of it to the
inputs of its activations (:mod:`iresflow.nn.residual`), so each block stays invertible in ``x`` for
every ``c`` and the certificate of ``g`` covers all of them. With ``prior='conditional'`` the base
distribution is a diagonal Gaussian whose mean and log-scale are linear in the embedded ``c``.

The flow is a bijection with the contract of every invertible piece (``forward_and_log_det``,
``inverse``, ``inverse_and_log_det``; see ``iresflow.nn.block``) and a distribution: ``__call__`` and
:meth:`IResNetFlow.log_prob` give ``log p(x)``, :meth:`IResNetFlow.sample` draws samples. The solver's
report of every block is sown into ``'inverse_info'`` (read it with ``iresflow.nn.inverse_info``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from iresflow.core import loops, validation
from iresflow.core.estimators import LogDetEstimator
from iresflow.core.fixed_point import FixedPointSolver
from iresflow.core.logdet import accumulation_dtype
from iresflow.nn.residual import ResidualSpec
from iresflow.nn.reshape import squeeze, unsqueeze
from iresflow.nn.step import (BlockView, FlowStep, check_block_type, scan_forward, scan_inverse,
                              stacked_block_views)

PRIORS = ("normal", "learned", "conditional")
_LOG_2PI = math.log(2 * math.pi)


def stage_specs(residual: ResidualSpec, stage_hidden: Sequence[int] | None, n_stages: int) -> tuple[ResidualSpec, ...]:
  """One spec per stage: ``residual`` with its ``hidden`` replaced by ``stage_hidden[i]`` when given."""
  if not isinstance(residual, ResidualSpec):
    raise TypeError(f"residual: expected a ResidualSpec, got {residual!r}")
  if stage_hidden is None:
    return (residual,) * n_stages
  stage_hidden = tuple(stage_hidden)
  if len(stage_hidden) != n_stages:
    raise ValueError(f"stage_hidden: expected one width per stage ({n_stages}), got {stage_hidden}")
  return tuple(dataclasses.replace(residual, hidden=int(h)) for h in stage_hidden)


class IResNetFlow(nn.Module):
  """Multi-scale i-ResNet flow for images, or a stack of fully connected blocks for vectors.

  Attributes:
    data_shape: per-example data shape, ``(H, W, C)`` or ``(d,)``.
    stages: number of steps in each image stage; ``()`` for vectors.
    residual: the residual function ``g`` of every image block (``iresflow.nn.ResidualSpec``).
    stage_hidden: widths of ``g`` per stage, overriding ``residual.hidden``; None: the same everywhere.
    fc_blocks: fully connected steps at the end (on the flattened data).
    fc_residual: ``g`` of the fully connected blocks (its ``dense_layers`` and ``hidden`` apply).
    actnorm: ActNorm before every block.
    initial_squeeze: squeeze the input before the first stage (``C -> 4C``).
    factor_out: after each squeeze between stages, send half the channels to the prior.
    prior: ``'normal'`` (standard normal), ``'learned'`` (diagonal Gaussian with learned mean/scale) or
      ``'conditional'`` (diagonal Gaussian with mean and log-scale linear in the embedded context;
      needs ``context_size > 0``).
    num_classes: if > 0, a hybrid model (Nalisnick et al. 2019; Residual Flows Sec. 5): a linear
      classifier on the latent ``z`` (:meth:`log_prob_and_logits`); train with
      ``bits/dim + lambda * cross-entropy``. The flow stays a density model of ``x`` alone.
    unroll_blocks: trace every block instead of one ``nn.scan`` body per stage. Compile time then
      grows with depth; on CPU a training step runs several times faster (docs/benchmarks.md).
      None (default): the forward pass unrolled on CPU, except fully connected blocks with the
      Neumann gradient, and scanned on other backends (:mod:`iresflow.core.loops`); the inverse
      scanned (each block's inverse is a loop anyway), and ``init`` scanned whatever this says (it
      runs once). Same parameters either way.
    block_type: ``'iresnet'`` (``x + g(x)``; i-ResNets, Residual Flows, i-DenseNets) or ``'monotone'``
      (the Cayley transform ``2 (I + g)^{-1} - I`` of ``g``; Monotone Flows, ``iresflow.nn.MonotoneBlock``).
    forward_solver: the forward pass's fixed-point solve of Monotone blocks (None: the block's default).
    context_size: ``k``, the size of the context vector of a conditional flow ``p(x | c)``; 0: unconditional.
    context_encoder: widths of an MLP (ELU) that embeds the context once before the blocks; ``()``: the
      blocks embed the raw context.
  """

  data_shape: Sequence[int]
  stages: Sequence[int] = (4, 4)
  residual: ResidualSpec = ResidualSpec()
  stage_hidden: Sequence[int] | None = None
  fc_blocks: int = 0
  fc_residual: ResidualSpec = ResidualSpec(hidden=128)
  actnorm: bool = True
  initial_squeeze: bool = True
  factor_out: bool = False
  prior: str = "normal"
  num_classes: int = 0
  unroll_blocks: bool | None = None
  block_type: str = "iresnet"
  forward_solver: FixedPointSolver | None = None
  context_size: int = 0
  context_encoder: Sequence[int] = ()

  # ----------------------------------------------------------------------------------- structure
  def _check_config(self) -> None:
    loops.check_unroll(self.unroll_blocks, "unroll_blocks")
    check_block_type(self.block_type)
    if self.forward_solver is not None and not isinstance(self.forward_solver, FixedPointSolver):
      raise TypeError(f"forward_solver: expected a FixedPointSolver or None, got {self.forward_solver!r}")
    if self.prior not in PRIORS:
      raise ValueError(f"prior: expected one of {PRIORS}, got {self.prior!r}")
    shape = tuple(self.data_shape)
    if len(shape) not in (1, 3) or any(int(n) < 1 for n in shape):
      raise ValueError(f"data_shape: expected (H, W, C) or (d,) with positive sizes, got {shape}")
    for n in self.stages:
      validation.check_positive_int(n, "stages")
    validation.check_nonnegative_int(self.fc_blocks, "fc_blocks")
    validation.check_nonnegative_int(self.num_classes, "num_classes")
    validation.check_nonnegative_int(self.context_size, "context_size")
    for width in self.context_encoder:
      validation.check_positive_int(width, "context_encoder")
    if self.context_encoder and not self.context_size:
      raise ValueError("context_encoder: an unconditional flow (context_size=0) has no context to embed")
    if self.prior == "conditional" and not self.context_size:
      raise ValueError("prior: 'conditional' needs a conditional flow (context_size > 0)")
    if len(shape) == 1 and self.stages:
      raise ValueError(f"stages: vector data {shape} has no spatial stages; use stages=() and fc_blocks")
    if not self.stages and not self.fc_blocks:
      raise ValueError("stages, fc_blocks: the flow has no blocks; give at least one")
    for spec in (self.residual, self.fc_residual):
      if not isinstance(spec, ResidualSpec):
        raise TypeError(f"residual, fc_residual: expected a ResidualSpec, got {spec!r}")
      if spec.constraint.coeff is None:
        raise ValueError("residual: a flow needs Lip(g) < 1; its constraint's coeff cannot be None")
    if len(shape) == 3:
      h, w, _ = shape
      n_squeezes = int(self.initial_squeeze) + max(len(self.stages) - 1, 0)
      if h % 2**n_squeezes or w % 2**n_squeezes:
        raise ValueError(f"data_shape: spatial size {(h, w)} must be divisible by 2^{n_squeezes} for the "
                         f"{n_squeezes} squeezes of this configuration")

  def stage_specs(self) -> tuple[ResidualSpec, ...]:
    """The residual function of each image stage."""
    return stage_specs(self.residual, self.stage_hidden, len(self.stages))

  def stage_shapes(self) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """Per-example shapes: the input of each stage, and the part factored out after each stage."""
    shape = tuple(int(n) for n in self.data_shape)
    if len(shape) == 1 or not self.stages:
      return [], []
    if self.initial_squeeze:
      shape = (shape[0] // 2, shape[1] // 2, shape[2] * 4)
    shapes, factored = [], []
    for i in range(len(self.stages)):
      shapes.append(shape)
      if i < len(self.stages) - 1:
        shape = (shape[0] // 2, shape[1] // 2, shape[2] * 4)
        if self.factor_out:
          half = shape[2] // 2
          factored.append(shape[:2] + (half,))
          shape = shape[:2] + (shape[2] - half,)
    return shapes, factored

  def blocks(self, variables: dict) -> list[BlockView]:
    """Every i-ResNet block of the flow with its own variables and input shape, in forward order.

    A plain method of the (unbound) module: ``flow.blocks(variables)``.
    """
    views = []
    shapes, _ = self.stage_shapes()
    for i, (spec, shape, length) in enumerate(zip(self.stage_specs(), shapes, self.stages)):
      views += stacked_block_views(variables, f"stage_steps_{i}", spec, shape, length, f"stage {i}",
                                   self.block_type, self.forward_solver)
    if self.fc_blocks:
      fc_dim = math.prod(shapes[-1]) if shapes else math.prod(self.data_shape)  # what factor-out leaves
      views += stacked_block_views(variables, "fc_step", self.fc_residual, (fc_dim,), self.fc_blocks,
                                   "fully connected", self.block_type, self.forward_solver)
    return views

  def setup(self):
    self._check_config()
    step = dict(actnorm=self.actnorm, block_type=self.block_type, forward_solver=self.forward_solver)
    self.stage_steps = [FlowStep(spec, **step) for spec in self.stage_specs()]
    self.fc_step = FlowStep(self.fc_residual, **step) if self.fc_blocks else None
    dim = math.prod(self.data_shape)
    self.classifier_head = nn.Dense(self.num_classes, name="classifier_head") if self.num_classes else None
    if self.prior == "learned":
      self.prior_mean = self.param("prior_mean", nn.initializers.zeros, (dim,))
      self.prior_log_scale = self.param("prior_log_scale", nn.initializers.zeros, (dim,))
    self.context_layers = [nn.Dense(int(width), name=f"context_encoder_{i}")
                           for i, width in enumerate(self.context_encoder)]
    if self.prior == "conditional":  # starts as the standard normal for every context
      self.prior_head = nn.Dense(2 * dim, kernel_init=nn.initializers.zeros, name="prior_head")

  def _embed_context(self, context: jax.typing.ArrayLike | None, batch: int) -> jax.Array | None:
    """Checks ``context`` against the flow (``(batch, context_size)``, or None when unconditional) and
    embeds it with ``context_encoder``."""
    if not self.context_size:
      if context is not None:
        raise ValueError("context: this flow is unconditional (context_size=0); create it with "
                         "context_size=k to condition on a context of shape (batch, k)")
      return None
    if context is None:
      raise ValueError(f"context: this conditional flow needs a context of shape ({batch}, {self.context_size})")
    context = jnp.asarray(context)
    validation.check_floating(context, "context")
    if context.shape != (batch, self.context_size):
      raise ValueError(f"context: expected shape ({batch}, {self.context_size}), one context per example, got "
                       f"{tuple(context.shape)}")
    h = context
    for layer in self.context_layers:
      h = jax.nn.elu(layer(h))
    return h

  def _check_input(self, x: jax.Array, name: str, shape: tuple[int, ...]) -> None:
    validation.check_floating(x, name)
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
      raise ValueError(f"{name}: expected shape (batch, {', '.join(map(str, shape))}), got {tuple(x.shape)}")
    if self.is_initializing():
      validation.check_finite_if_concrete(x, name)  # ActNorm would silently initialise from NaN

  # ------------------------------------------------------------------------------- the bijection
  def _forward(self, x: jax.Array, estimator: LogDetEstimator | None, context: jax.Array | None
               ) -> tuple[jax.Array, jax.Array]:
    self._check_input(x, "x", tuple(self.data_shape))
    batch = x.shape[0]
    context = self._embed_context(context, batch)
    total = jnp.zeros((batch,), accumulation_dtype(x.dtype))
    pieces = []
    if self.stages:
      if self.initial_squeeze:
        x = squeeze(x)
      for i, length in enumerate(self.stages):
        x, value = scan_forward(self.stage_steps[i], x, length, estimator=estimator, unroll=self.unroll_blocks,
                                context=context)
        total = total + value
        if i < len(self.stages) - 1:
          x = squeeze(x)
          if self.factor_out:
            half = x.shape[-1] // 2
            pieces.append(x[..., :half].reshape(batch, -1))
            x = x[..., half:]
    x = x.reshape(batch, -1)
    if self.fc_step is not None:
      x, value = scan_forward(self.fc_step, x, self.fc_blocks, estimator=estimator, unroll=self.unroll_blocks,
                              context=context)
      total = total + value
    return jnp.concatenate(pieces + [x], axis=1), total

  def _inverse(self, z: jax.Array, solver: FixedPointSolver, estimator: LogDetEstimator | None,
               context: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    dim = math.prod(self.data_shape)
    self._check_input(z, "z", (dim,))
    batch = z.shape[0]
    context = self._embed_context(context, batch)
    total = jnp.zeros((batch,), accumulation_dtype(z.dtype))
    shapes, factored = self.stage_shapes()
    pieces = jnp.split(z, list(itertools.accumulate(math.prod(s) for s in factored)), axis=1)
    x = pieces[-1]
    if self.fc_step is not None:
      x, value = scan_inverse(self.fc_step, x, self.fc_blocks, solver=solver, estimator=estimator,
                              unroll=self.unroll_blocks, context=context)
      total = total + value
    if not self.stages:
      return x.reshape((batch,) + tuple(self.data_shape)), total
    x = x.reshape((batch,) + shapes[-1])
    for i in reversed(range(len(self.stages))):
      if i < len(self.stages) - 1:
        if self.factor_out:
          x = jnp.concatenate([pieces[i].reshape((batch,) + factored[i]), x], axis=-1)
        x = unsqueeze(x)
      x, value = scan_inverse(self.stage_steps[i], x, self.stages[i], solver=solver, estimator=estimator,
                              unroll=self.unroll_blocks, context=context)
      total = total + value
    if self.initial_squeeze:
      x = unsqueeze(x)
    return x, total

  def forward(self, x: jax.Array, *, context: jax.Array | None = None) -> jax.Array:
    """``z = F(x)``: flat latents ``(batch, D)`` for data ``(batch, *data_shape)``.

    Every method takes ``context`` (``(batch, context_size)``) when the flow is conditional.
    """
    return self._forward(x, None, context)[0]

  def forward_and_log_det(self, x: jax.Array, *, estimator: LogDetEstimator, context: jax.Array | None = None
                          ) -> tuple[jax.Array, jax.Array]:
    """``(z, log det J_F(x))``: flat latents ``(batch, D)`` and the total log-det ``(batch,)``."""
    return self._forward(x, estimator, context)

  def inverse(self, z: jax.Array, *, solver: FixedPointSolver = FixedPointSolver(),
              context: jax.Array | None = None) -> jax.Array:
    """``x = F^{-1}(z)`` for flat latents ``(batch, D)``; every block's report is sown into ``'inverse_info'``."""
    return self._inverse(z, solver, None, context)[0]

  def inverse_and_log_det(self, z: jax.Array, *, solver: FixedPointSolver = FixedPointSolver(),
                          estimator: LogDetEstimator, context: jax.Array | None = None
                          ) -> tuple[jax.Array, jax.Array]:
    """``(x, log det J_{F^-1}(z))``, the latter ``= -log det J_F(x)`` at the solution."""
    return self._inverse(z, solver, estimator, context)

  # ----------------------------------------------------------------------------- the distribution
  def _prior_mean_and_log_scale(self, batch: int, context: jax.Array | None):
    """The prior's mean and log-scale, ``(D,)`` each or ``(batch, D)`` for a conditional prior; None: standard."""
    if self.prior == "learned":
      return self.prior_mean, self.prior_log_scale
    if self.prior == "conditional":
      mean, log_scale = jnp.split(self.prior_head(self._embed_context(context, batch)), 2, axis=-1)
      return mean, log_scale
    self._embed_context(context, batch)  # checks it
    return None

  def prior_log_prob(self, z: jax.Array, *, context: jax.Array | None = None) -> jax.Array:
    """``log p_z(z)`` (``log p_z(z | c)``) per example for flat latents ``(batch, D)``, in float32 for any ``z``."""
    z = z.astype(accumulation_dtype(z.dtype))
    moments = self._prior_mean_and_log_scale(z.shape[0], context)
    if moments is not None:
      mean, log_scale = moments
      scaled = (z - mean) * jnp.exp(-log_scale)
      return jnp.sum(-0.5 * scaled**2 - 0.5 * _LOG_2PI - log_scale, axis=1)
    return jnp.sum(-0.5 * z**2 - 0.5 * _LOG_2PI, axis=1)

  def log_prob(self, x: jax.Array, *, estimator: LogDetEstimator, context: jax.Array | None = None) -> jax.Array:
    """``log p(x)`` (``log p(x | c)``) per example (eq. 3), in nats, for continuous ``x`` ``(batch, *data_shape)``."""
    z, total = self.forward_and_log_det(x, estimator=estimator, context=context)
    if self.classifier_head is not None and self.is_initializing():
      self.classifier_head(z)  # so that init through log_prob creates every parameter of a hybrid model
    return self.prior_log_prob(z, context=context) + total

  def log_prob_and_logits(self, x: jax.Array, *, estimator: LogDetEstimator, context: jax.Array | None = None
                          ) -> tuple[jax.Array, jax.Array]:
    """Hybrid model: ``(log p(x), class logits)`` from one forward pass; needs ``num_classes > 0``."""
    if self.classifier_head is None:
      raise ValueError("num_classes: log_prob_and_logits needs a hybrid model (num_classes > 0)")
    z, total = self.forward_and_log_det(x, estimator=estimator, context=context)
    return self.prior_log_prob(z, context=context) + total, self.classifier_head(z)

  def __call__(self, x: jax.Array, *, estimator: LogDetEstimator, context: jax.Array | None = None) -> jax.Array:
    """``log p(x)`` (:meth:`log_prob`); ``init`` through it creates every parameter, a hybrid head too."""
    return self.log_prob(x, estimator=estimator, context=context)

  def sample_prior(self, n: int, *, context: jax.Array | None = None, temperature: float = 1.0) -> jax.Array:
    """``n`` flat latents from the prior (given ``context`` ``(n, context_size)``); draws from ``'sample'``.

    ``temperature`` scales the prior's standard deviation (below 1: samples nearer the modes, as in
    Glow's figures; 1: the model's distribution).
    """
    validation.check_positive_int(n, "n")
    if not temperature > 0:
      raise ValueError(f"temperature: expected a positive number, got {temperature!r}")
    eps = temperature * jax.random.normal(self.make_rng("sample"), (n, math.prod(self.data_shape)))
    moments = self._prior_mean_and_log_scale(n, context)
    if moments is not None:
      mean, log_scale = moments
      return mean + jnp.exp(log_scale) * eps
    return eps

  def sample(self, n: int, *, solver: FixedPointSolver = FixedPointSolver(),
             context: jax.Array | None = None) -> jax.Array:
    """``n`` samples ``F^{-1}(z)``, ``z ~ prior``, of shape ``(n, *data_shape)`` (the ``i``-th given ``context[i]``).

    Every block's solver report is sown into ``'inverse_info'``.
    """
    return self.inverse(self.sample_prior(n, context=context), solver=solver, context=context)
