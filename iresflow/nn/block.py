"""The i-ResNet block ``F(x) = x + g(x)`` with ``Lip(g) < 1``: forward with log-det, and inverse.

The block holds ``g``'s parameters (:class:`~iresflow.nn.residual.ContractiveResidual`) and calls the
core: :func:`~iresflow.core.logdet.power_series_logdet` (Algorithm 2) or
:func:`~iresflow.core.logdet.exact_logdet` for ``log det(I + J_g)``, and
:func:`~iresflow.core.fixed_point.fixed_point_inverse` (Algorithm 1) for the inverse.

The log-det estimator is chosen per call, so one set of variables can train with a cheap estimator
and evaluate with an exact or longer one:

* ``logdet='series'``: ``n_terms`` terms, ``n_probes`` Hutchinson probes; draws from the ``'logdet'``
  RNG stream (``rngs={'logdet': key}``; Flax falls back to ``'params'`` at ``init``). Gradient by
  backprop through the terms or, with ``gradient='neumann'``, the memory-flat Neumann series.
* ``logdet='roulette'``: the unbiased Russian-roulette estimator of Residual Flows.
* ``logdet='exact'``: ``jax.jacfwd`` + ``slogdet``; small inputs only.
* ``logdet=None``: no log-det (classification); returns zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from iresflow.core import fixed_point, logdet as logdet_lib, precision as precision_lib, validation
from iresflow.nn.residual import ContractiveResidual
from iresflow.nn.spectral import LipschitzConstraint

LOGDET_MODES = ("series", "roulette", "exact", None)


@dataclass(frozen=True)
class LogDetOptions:
  """How to compute ``log det(I + J_g)``; hashable, so it can be a static argument.

  Attributes:
    mode: ``'series'`` (truncated, Algorithm 2), ``'roulette'`` (unbiased, Residual Flows),
      ``'exact'`` or ``None``.
    n_terms: power-series terms (``'series'``).
    n_probes: Hutchinson probes per example (``'series'``, ``'roulette'``).
    probe: ``'gaussian'`` or ``'rademacher'``.
    gradient: ``'backprop'`` (through every term) or ``'neumann'`` (memory flat in the number of
      terms) for ``'series'``; ``'roulette'`` always uses ``'neumann'``.
    n_exact_terms, distribution, geometric_p, poisson_rate, max_terms: the roulette estimator's
      settings (see :func:`iresflow.core.logdet.roulette_logdet`).
    unroll: trace every series term instead of one loop body (``'series'``): longer compile,
      much faster steps on CPU (see :func:`iresflow.core.logdet.power_series_logdet`).
  """

  mode: str | None = "series"
  n_terms: int = 5
  n_probes: int = 1
  probe: str = "gaussian"
  gradient: str = "backprop"
  n_exact_terms: int = 2
  distribution: str = "geometric"
  geometric_p: float = 0.5
  poisson_rate: float = 2.0
  max_terms: int = 100
  unroll: bool = False

  def __post_init__(self):
    if self.mode not in LOGDET_MODES:
      raise ValueError(f"logdet: expected one of {LOGDET_MODES}, got {self.mode!r}")
    validation.check_positive_int(self.n_terms, "n_terms")
    validation.check_positive_int(self.n_probes, "n_probes")
    if self.probe not in logdet_lib.PROBES:
      raise ValueError(f"probe: expected one of {logdet_lib.PROBES}, got {self.probe!r}")
    if self.gradient not in logdet_lib.GRADIENTS:
      raise ValueError(f"gradient: expected one of {logdet_lib.GRADIENTS}, got {self.gradient!r}")
    if self.distribution not in logdet_lib.ROULETTE_DISTRIBUTIONS:
      raise ValueError(f"distribution: expected one of {logdet_lib.ROULETTE_DISTRIBUTIONS}, "
                       f"got {self.distribution!r}")
    validation.check_positive_int(self.n_exact_terms, "n_exact_terms")
    validation.check_positive_int(self.max_terms, "max_terms")


@dataclass(frozen=True)
class InverseOptions:
  """Stopping rule and matmul precision of the fixed-point inverse (see :func:`fixed_point_inverse`).

  Attributes:
    atol: absolute tolerance on the per-example max-abs residual ``|x + g(x) - y|``.
    rtol: tolerance relative to the per-example ``max |y|``.
    max_iters: maximum number of fixed-point updates per block.
    precision: matmul precision of ``g`` in the solve: ``'highest'`` (default; true float32 on GPUs
      and TPUs, needed for tolerances below ~1e-4) or None for JAX's default (TensorFloat-32 on
      recent GPUs); see :mod:`iresflow.core.precision`.
    adjoint_failure: ``'nan'`` (default) makes the gradient of an example whose adjoint solve did
      not converge NaN; ``'ignore'`` keeps it (see :func:`fixed_point_inverse`).
  """

  atol: float = 1e-6
  rtol: float = 1e-6
  max_iters: int = 200
  precision: str | None = "highest"
  adjoint_failure: str = "nan"

  def __post_init__(self):
    validation.check_nonnegative(self.atol, "atol")
    validation.check_nonnegative(self.rtol, "rtol")
    validation.check_nonnegative_int(self.max_iters, "max_iters")
    precision_lib.check_precision(self.precision)
    fixed_point.check_adjoint_failure(self.adjoint_failure)


class IResNetBlock(nn.Module):
  """``F(x) = x + g(x)``; see :class:`ContractiveResidual` for the attributes of ``g``."""

  hidden: int = 64
  kernel_sizes: Sequence[int] = (3, 1, 3)
  activation: str = "elu"
  constraint: LipschitzConstraint = LipschitzConstraint()
  preactivation: bool = False

  def setup(self):
    self.g = ContractiveResidual(hidden=self.hidden, kernel_sizes=self.kernel_sizes, activation=self.activation,
                                 constraint=self.constraint, preactivation=self.preactivation)

  def forward_and_log_det(self, x: jax.Array, logdet: LogDetOptions = LogDetOptions()
                          ) -> tuple[jax.Array, jax.Array]:
    """``(F(x), log det J_F(x))`` for a batch ``x`` of shape ``(batch, ...)``; log-det ``(batch,)``."""
    g = self.g.residual_function(x.shape[1:])
    if logdet.mode is None:
      return x + g(x), jnp.zeros((x.shape[0],), logdet_lib.accumulation_dtype(x.dtype))
    if logdet.mode == "exact":
      gx, value = logdet_lib.exact_logdet(g, x)
    elif logdet.mode == "series":
      gx, value = logdet_lib.power_series_logdet(
          g, x, self.make_rng("logdet"), n_terms=logdet.n_terms, n_probes=logdet.n_probes,
          probe=logdet.probe, gradient=logdet.gradient, unroll=logdet.unroll)
    else:
      gx, value = logdet_lib.roulette_logdet(
          g, x, self.make_rng("logdet"), n_exact_terms=logdet.n_exact_terms, distribution=logdet.distribution,
          geometric_p=logdet.geometric_p, poisson_rate=logdet.poisson_rate, max_terms=logdet.max_terms,
          n_probes=logdet.n_probes, probe=logdet.probe)
    return x + gx, value

  def inverse(self, y: jax.Array, options: InverseOptions = InverseOptions()
              ) -> tuple[jax.Array, fixed_point.FixedPointInfo]:
    """``(F^{-1}(y), info)`` by Algorithm 1; ``info`` says per example whether it converged.

    Differentiable (implicit differentiation): gradients flow to ``y`` and to the parameters.
    """
    g = self.g.residual_function(y.shape[1:])
    return fixed_point.fixed_point_inverse(g, y, atol=options.atol, rtol=options.rtol, max_iters=options.max_iters,
                                           precision=options.precision, adjoint_failure=options.adjoint_failure)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.forward_and_log_det(x, LogDetOptions(mode=None))[0]
