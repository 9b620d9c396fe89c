"""Log-determinant estimators as small frozen settings objects: ``estimator(key, g, x) -> (g(x), logdet)``.

Every invertible piece's ``forward_and_log_det(x, *, estimator=...)`` takes one, so a model trains with
a cheap estimator and evaluates with an exact or unbiased one from the same variables. What an
estimator is, is the :class:`LogDetEstimator` protocol; the library's three:

* :class:`ExactLogDet` -- ``jax.jacfwd`` + ``slogdet`` (:func:`~iresflow.core.logdet.exact_logdet`); small inputs.
* :class:`PowerSeries` -- the truncated series of Algorithm 2 with Hutchinson probes
  (:func:`~iresflow.core.logdet.power_series_logdet`); biased by at most Theorem 3's bound.
* :class:`Roulette` -- the unbiased Russian-roulette series of Residual Flows
  (:func:`~iresflow.core.logdet.roulette_logdet`).

The block decides which log-det it needs: ``estimator(key, g, x, transform='cayley')`` estimates
``ln det(I - J_g) - ln det(I + J_g)`` for Monotone Flows' Cayley-transform block, with the same
settings (see :mod:`iresflow.core.logdet`).

They are frozen dataclasses: hashable (a static argument of ``jax.jit``), checked when built, and
printable as the sentence a result table needs (:meth:`describe`). A user-defined estimator needs only
the protocol; :func:`register_estimator` gives it a ``kind`` name for training configs.

Precision policy. The series estimators compute ``g(x)`` and the series (every vector-Jacobian
product, forward and backward) at ``precision`` and in ``compute_dtype``; the defaults (JAX's default
matmul precision, the input's dtype) suit a training step. For evaluation pass ``precision='highest'``
(the training configs do, see ``iresflow.train.config``). What must be accurate whatever the setting
runs at ``'highest'`` regardless: the spectral-norm estimates (they run before ``g`` is built), the
fixed-point inverse, the certificate and :class:`ExactLogDet` (see :mod:`iresflow.core.precision`).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
from typing import Callable, ClassVar, Protocol, Sequence, runtime_checkable

import jax
import jax.numpy as jnp

from iresflow.core import logdet, loops, precision as precision_lib, validation


@runtime_checkable
class LogDetEstimator(Protocol):
  """What every log-det estimator is; blocks, flows and the trainer use nothing else of it.

  Attributes:
    needs_key: whether :meth:`__call__` draws random numbers (blocks then pass a key from the
      ``'logdet'`` RNG stream; otherwise ``key`` is None).
  """

  needs_key: ClassVar[bool]

  def __call__(self, key: jax.Array | None, g: Callable[[jax.Array], jax.Array], x: jax.Array, *,
               transform: str = "residual") -> tuple[jax.Array, jax.Array]:
    """``(g(x), logdet)`` for a batch ``x`` ``(batch, ...)``: ``ln det(I + J_g(x))`` per example, shape
    ``(batch,)`` (``transform='residual'``, eq. 4), or ``ln det(I - J_g) - ln det(I + J_g)``
    (``'cayley'``, Monotone Flows). Differentiable in ``x`` and in what ``g`` closes over."""

  def describe(self) -> str:
    """One sentence for result tables: what computed the log-det, and its bias."""

  def bias_bound(self, lipschitz: Sequence[float], dim: int, *, transform: str = "residual") -> float | None:
    """An upper bound on ``|E[estimate] - ln det|``, in nats per example, summed over blocks whose
    ``Lip(g_t) <= lipschitz[t]`` and whose dimension is at most ``dim``: 0 for an exact or unbiased
    estimator, ``inf`` where a constant is not below 1, None if the estimator cannot bound it."""


@dataclasses.dataclass(frozen=True)
class ExactLogDet:
  """``ln |det(I + J_g)|`` by ``jax.jacfwd`` and ``slogdet``: ``d`` forward passes and ``O(d^3)`` per example.

  Attributes:
    precision: matmul precision of ``g`` while it is differentiated (default ``'highest'``).
  """

  precision: str | None = "highest"
  needs_key: ClassVar[bool] = False

  def __post_init__(self):
    precision_lib.check_precision(self.precision)

  def __call__(self, key: jax.Array | None, g: logdet.ResidualFn, x: jax.Array, *, transform: str = "residual"
               ) -> tuple[jax.Array, jax.Array]:
    del key  # deterministic
    return logdet.exact_logdet(g, x, precision=self.precision, transform=transform)

  def describe(self) -> str:
    return "exact log-det (jax.jacfwd + slogdet): no estimator bias"

  def bias_bound(self, lipschitz: Sequence[float], dim: int, *, transform: str = "residual") -> float:
    del lipschitz, dim, transform
    return 0.0


@dataclasses.dataclass(frozen=True)
class PowerSeries:
  """The truncated power series of eq. (5) with Hutchinson probes (Algorithm 2).

  Attributes:
    n_terms: series terms ``n >= 1``; the bias is at most
      :func:`~iresflow.core.logdet.series_truncation_bound` (Theorem 3).
    n_probes: Hutchinson probes per example.
    probe: ``'gaussian'`` or ``'rademacher'``.
    gradient: ``'backprop'`` (through every term, the paper's) or ``'neumann'`` (Residual Flows'
      Neumann-series gradient, memory flat in ``n_terms``).
    unroll: trace every term instead of one loop body (longer compile; much faster on XLA:CPU).
      None (default): unrolled on CPU (except vector inputs with the Neumann gradient), a loop on
      other backends (:mod:`iresflow.core.loops`).
    remat: recompute ``g``'s forward in the backward pass instead of keeping its activations
      (with ``'neumann'`` only the Neumann vector is kept): less memory, the same gradients (reverse
      mode only), one more forward of ``g`` per block (the whole series with ``'backprop'``).
      None (default): with ``'neumann'`` only, where only one vector is kept besides the input, so
      recomputing ``g`` buys the most memory for one forward pass (measurements: docs/memory.md).
    precision: matmul precision of ``g`` and its vector-Jacobian products (one of
      ``iresflow.core.precision.PRECISIONS``). None (default): JAX's default, TensorFloat-32 on recent
      NVIDIA GPUs and one bfloat16 pass on TPUs (float32 on CPUs whatever the setting); ``'highest'``
      for evaluation.
    compute_dtype: ``'bfloat16'``, ``'float16'`` or ``'float32'``: ``g``, its vector-Jacobian
      products and the probes run in that dtype (the input is cast to it, the parameters at each
      layer), the terms are summed in float32, and ``g(x)`` is returned in the input's dtype. None
      (default): the input's dtype.
  """

  n_terms: int = 5
  n_probes: int = 1
  probe: str = "gaussian"
  gradient: str = "backprop"
  unroll: bool | None = None
  remat: bool | None = None
  precision: str | None = None
  compute_dtype: str | None = None
  needs_key: ClassVar[bool] = True

  def __post_init__(self):
    _check_policy(self)
    validation.check_positive_int(self.n_terms, "n_terms")
    validation.check_positive_int(self.n_probes, "n_probes")
    _check_choice(self.probe, logdet.PROBES, "probe")
    _check_choice(self.gradient, logdet.GRADIENTS, "gradient")
    loops.check_unroll(self.unroll)
    if self.remat is not None:
      _check_bool(self.remat, "remat")

  def __call__(self, key: jax.Array, g: logdet.ResidualFn, x: jax.Array, *, transform: str = "residual"
               ) -> tuple[jax.Array, jax.Array]:
    estimate = lambda x: logdet.power_series_logdet(
        key, g, x, n_terms=self.n_terms, n_probes=self.n_probes, probe=self.probe, gradient=self.gradient,
        unroll=self.unroll, remat=self.remat, transform=transform)
    return _under_policy(estimate, x, self.precision, self.compute_dtype)

  def describe(self) -> str:
    return f"power series, {self.n_terms} terms, {self.n_probes} {self.probe} probes" + _describe_policy(self)

  def bias_bound(self, lipschitz: Sequence[float], dim: int, *, transform: str = "residual") -> float:
    """Theorem 3 for each block, summed: the truncation bias of ``n_terms`` terms."""
    return _truncation_bias(lipschitz, dim, self.n_terms, transform)


@dataclasses.dataclass(frozen=True)
class Roulette:
  """The unbiased Russian-roulette series (Residual Flows, Chen et al. 2019); Neumann-series gradient.

  Attributes:
    n_exact_terms: terms always computed (Residual Flows use 2).
    distribution: ``'geometric'`` or ``'poisson'`` for the number of extra terms.
    geometric_p: success probability of the geometric distribution.
    poisson_rate: mean of the Poisson distribution.
    max_terms: cap on the number of terms; the expectation is the series truncated there (:meth:`bias_bound`).
    n_probes: Hutchinson probes per example.
    probe: ``'gaussian'`` or ``'rademacher'``.
    unroll: trace the exact terms one by one (the random extra terms always run in a loop).
      None (default): on CPU only, not for vector inputs (:mod:`iresflow.core.loops`).
    remat: recompute ``g``'s forward in the backward pass, keeping only the Neumann vector (see
      ``PowerSeries``). None (default): on, as for ``PowerSeries`` with the Neumann gradient.
    precision: matmul precision of ``g`` and its vector-Jacobian products (see ``PowerSeries``).
    compute_dtype: the dtype ``g`` and the series run in (see ``PowerSeries``).
  """

  n_exact_terms: int = 2
  distribution: str = "geometric"
  geometric_p: float = 0.5
  poisson_rate: float = 2.0
  max_terms: int = 100
  n_probes: int = 1
  probe: str = "gaussian"
  unroll: bool | None = None
  remat: bool | None = None
  precision: str | None = None
  compute_dtype: str | None = None
  needs_key: ClassVar[bool] = True

  def __post_init__(self):
    _check_policy(self)
    validation.check_positive_int(self.n_exact_terms, "n_exact_terms")
    loops.check_unroll(self.unroll)
    if self.remat is not None:
      _check_bool(self.remat, "remat")
    validation.check_positive_int(self.max_terms, "max_terms")
    validation.check_positive_int(self.n_probes, "n_probes")
    _check_choice(self.distribution, logdet.ROULETTE_DISTRIBUTIONS, "distribution")
    _check_choice(self.probe, logdet.PROBES, "probe")
    if self.max_terms < self.n_exact_terms:
      raise ValueError(f"max_terms: expected >= n_exact_terms ({self.n_exact_terms}), got {self.max_terms}")
    if not 0.0 < self.geometric_p < 1.0:
      raise ValueError(f"geometric_p: expected a probability in (0, 1), got {self.geometric_p}")
    if not self.poisson_rate > 0:
      raise ValueError(f"poisson_rate: expected a positive number, got {self.poisson_rate}")

  def __call__(self, key: jax.Array, g: logdet.ResidualFn, x: jax.Array, *, transform: str = "residual"
               ) -> tuple[jax.Array, jax.Array]:
    estimate = lambda x: logdet.roulette_logdet(
        key, g, x, n_exact_terms=self.n_exact_terms, distribution=self.distribution, geometric_p=self.geometric_p,
        poisson_rate=self.poisson_rate, max_terms=self.max_terms, n_probes=self.n_probes, probe=self.probe,
        unroll=self.unroll, remat=self.remat, transform=transform)
    return _under_policy(estimate, x, self.precision, self.compute_dtype)

  def describe(self) -> str:
    return (f"unbiased Russian-roulette series ({self.n_exact_terms} exact terms, {self.distribution}, at most "
            f"{self.max_terms} terms), {self.n_probes} {self.probe} probes" + _describe_policy(self))

  def bias_bound(self, lipschitz: Sequence[float], dim: int, *, transform: str = "residual") -> float:
    """The cap's bias: the estimate's expectation is the series truncated at ``max_terms`` (every term up
    to the cap is reweighted by ``1 / P(reaching it)``), so Theorem 3 at ``max_terms`` bounds it."""
    return _truncation_bias(lipschitz, dim, self.max_terms, transform)


def _truncation_bias(lipschitz: Sequence[float], dim: int, n_terms: int, transform: str) -> float:
  """``sum_t`` Theorem 3's bound for ``n_terms`` terms at ``Lip(g_t) <= lipschitz[t]``; inf if one is >= 1."""
  total = 0.0
  for value in lipschitz:
    if not 0.0 <= value < 1.0:
      return math.inf
    total += logdet.series_truncation_bound(float(value), dim, n_terms, transform=transform)
  return total


_KINDS: dict[str, type] = {"exact": ExactLogDet, "series": PowerSeries, "roulette": Roulette}

# The estimators a training config can name in ``estimator.kind`` (read-only; see :func:`register_estimator`).
ESTIMATORS = types.MappingProxyType(_KINDS)


def register_estimator(kind: str, estimator_class: type, *, overwrite: bool = False) -> None:
  """Lets training configs name a user-defined estimator: ``config.estimator = dict(kind=kind, ...)``.

  Args:
    kind: the name configs use.
    estimator_class: a class whose instances satisfy :class:`LogDetEstimator`, built from keyword
      arguments (the config's settings besides ``kind``), e.g. a frozen dataclass.
    overwrite: replace a kind already registered.

  Raises:
    ValueError, TypeError: naming the argument that is wrong.
  """
  if not isinstance(kind, str) or not kind:
    raise TypeError(f"kind: expected a non-empty string, got {kind!r}")
  if kind in _KINDS and not overwrite:
    raise ValueError(f"kind: estimator kind {kind!r} is already registered; pass overwrite=True to replace it")
  if not isinstance(estimator_class, type):
    raise TypeError(f"estimator_class: expected a class, got {estimator_class!r}")
  missing = [name for name in ("needs_key", "__call__", "describe", "bias_bound") if not hasattr(estimator_class, name)]
  if missing:
    raise TypeError(f"estimator_class: {estimator_class.__name__} lacks {missing} of the LogDetEstimator protocol")
  _KINDS[kind] = estimator_class


def estimator_settings(kind: str) -> tuple[str, ...]:
  """The keyword settings of estimator ``kind`` (its constructor's parameters)."""
  if kind not in _KINDS:
    raise ValueError(f"estimator.kind: expected one of {sorted(_KINDS)}, got {kind!r}")
  return tuple(name for name, parameter in inspect.signature(_KINDS[kind]).parameters.items()
               if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY))


def check_estimator(estimator, name: str = "estimator") -> None:
  """Raises ``TypeError`` unless ``estimator`` satisfies :class:`LogDetEstimator`."""
  if isinstance(estimator, type) or not isinstance(estimator, LogDetEstimator):
    raise TypeError(f"{name}: expected a log-det estimator (ExactLogDet(), PowerSeries(...), Roulette(...) from "
                    f"iresflow.core, or an object with needs_key, __call__, describe and bias_bound), got "
                    f"{estimator!r}")


COMPUTE_DTYPES = ("bfloat16", "float16", "float32")


def _check_policy(estimator) -> None:
  """Checks ``precision`` and ``compute_dtype``; stores the latter by name (``jnp.bfloat16`` -> ``'bfloat16'``)."""
  precision_lib.check_precision(estimator.precision)
  if estimator.compute_dtype is None:
    return
  try:
    name = jnp.dtype(estimator.compute_dtype).name
  except TypeError:
    name = None
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"compute_dtype: expected None (the input's dtype) or one of {COMPUTE_DTYPES}, "
                     f"got {estimator.compute_dtype!r}")
  object.__setattr__(estimator, "compute_dtype", name)


def _under_policy(estimate, x: jax.Array, precision: str | None, compute_dtype: str | None
                  ) -> tuple[jax.Array, jax.Array]:
  """``estimate(x) -> (g(x), logdet)`` with matmuls at ``precision`` on ``x`` cast to ``compute_dtype``;
  ``g(x)`` comes back in ``x``'s dtype (the log-det is in the accumulation dtype already)."""
  estimate = precision_lib.with_matmul_precision(estimate, precision)
  x = jnp.asarray(x)
  if compute_dtype is None or compute_dtype == x.dtype:
    return estimate(x)
  gx, value = estimate(x.astype(compute_dtype))
  return gx.astype(x.dtype), value


def _describe_policy(estimator) -> str:
  settings = [f"{name} {value}" for name, value in (("matmul precision", estimator.precision),
                                                     ("g in", estimator.compute_dtype)) if value is not None]
  return f" ({', '.join(settings)})" if settings else ""


def _check_bool(value, name: str) -> None:
  if not isinstance(value, bool):
    raise TypeError(f"{name}: expected True or False, got {value!r}")


def _check_choice(value, choices, name: str) -> None:
  if value not in choices:
    raise ValueError(f"{name}: expected one of {tuple(choices)}, got {value!r}")
