"""A flow as a distribution: ``log_prob``, ``sample`` and the bijector, without Flax plumbing.

:class:`FlowDistribution` holds an ``IResNetFlow``, its variables and the settings of its log-det
estimator and fixed-point solver in one value. It is a JAX pytree: the variables are its leaves, the
model and settings static, so it passes through ``jax.jit``, ``jax.vmap`` and ``jax.grad`` like an
array of parameters (the shape of flowjax's and distrax's distributions).

Direction. The residual blocks are cheap one way, ``y = x + g(x)``, and need a fixed point the
other way (Algorithm 1). ``direction='density'`` (the default; i-ResNets, Residual Flows) puts the
cheap map from data to latents: ``log_prob`` is one forward pass (eq. 3), ``sample`` solves a fixed
point per block. ``direction='sampling'`` puts it from latents to data, for variational inference: a
sample is ``x = F(u)``, ``u ~ p_u``, with ``log q(x) = log p_u(u) - log det J_F(u)`` in the same pass,
while ``log_prob`` of a given ``x`` solves the fixed point.

Conditional flows (``IResNetFlow(..., context_size=k)``) are distributions ``p(x | c)``: every
method takes ``context=`` of shape ``(..., k)``, broadcast against the batch shape of its input
(one context for all examples, or one per example). The bijector is then invertible in ``x`` for
every ``c`` and its log-det is the one in ``x`` at fixed ``c``.

The bijector is the map from the base distribution to the data, as in distrax's ``Transformed``:
:meth:`FlowDistribution.forward_and_log_det` takes base points ``u`` (flat, ``(..., D)``) to data,
:meth:`FlowDistribution.inverse_and_log_det` data to base points.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.struct
import jax
import jax.numpy as jnp

from iresflow.core.compilation import jit_run_once
from iresflow.core.estimators import ExactLogDet, LogDetEstimator, Roulette, check_estimator
from iresflow.core.fixed_point import FixedPointInfo, FixedPointSolver
from iresflow.nn.block import INVERSE_INFO, inverse_info

DIRECTIONS = ("density", "sampling")
# Up to this many dimensions the default estimator is the exact log-det (a D x D Jacobian per example).
EXACT_UP_TO_DIMENSION = 16


def default_estimator(dimension: int) -> LogDetEstimator:
  """The exact log-det up to :data:`EXACT_UP_TO_DIMENSION` dimensions, else the unbiased roulette.

  Args:
    dimension: ``D``, the number of dimensions of one example.
  """
  return ExactLogDet() if dimension <= EXACT_UP_TO_DIMENSION else Roulette()


class FlowDistribution(flax.struct.PyTreeNode):
  """A normalising flow ``p(x)`` built from residual blocks, as one pytree value.

  Make one with :meth:`create`. Every method takes inputs with any leading batch shape.

  Attributes:
    model: the ``iresflow.models.IResNetFlow`` (static).
    variables: its Flax variables (``params`` and the norm estimators' ``spectral`` state): the leaves.
    estimator: the log-det estimator of ``log_prob`` and ``sample_and_log_prob`` (static). Default:
      :func:`default_estimator`, exact where ``D <= 16``, Russian roulette (unbiased) otherwise.
    solver: the fixed-point solver of the expensive direction (static).
    direction: ``'density'`` (cheap ``log_prob``) or ``'sampling'`` (cheap ``sample``) (static).
    fresh_norms: estimate every layer's spectral norm afresh at each call (the constraint's
      ``n_power_iterations`` steps from the stored vectors, results not stored) rather than read the
      stored estimate (static). For training loops that do not carry the ``'spectral'`` state, where
      the stored estimate would go stale as the weights move and ``Lip(g) < 1`` would no longer hold:
      ``jax.grad`` of your own loss of the distribution, NumPyro's SVI (``iresflow.interop``).
      ``fit`` and ``fit_variational`` carry the state and do not need it.
  """

  model: Any = flax.struct.field(pytree_node=False)
  variables: dict
  estimator: LogDetEstimator = flax.struct.field(pytree_node=False)
  solver: FixedPointSolver = flax.struct.field(pytree_node=False, default=FixedPointSolver())
  direction: str = flax.struct.field(pytree_node=False, default="density")
  fresh_norms: bool = flax.struct.field(pytree_node=False, default=False)

  @classmethod
  def create(cls, key: jax.Array, model, *, x_init: jax.typing.ArrayLike | None = None,
             context_init: jax.typing.ArrayLike | None = None, estimator: LogDetEstimator | None = None,
             solver: FixedPointSolver | None = None, direction: str = "density", fresh_norms: bool = False
             ) -> "FlowDistribution":
    """Initialises ``model``'s variables from ``key`` and wraps them.

    Args:
      key: PRNG key of the initialisation.
      model: an ``IResNetFlow`` (its ``data_shape`` is the event shape).
      x_init: examples ``(N, *data_shape)`` for ActNorm's data-dependent initialisation (pass a batch
        of the training data); None: 256 standard-normal draws, so that ActNorm starts near the
        identity (the right start for variational inference and standardised data).
      context_init: conditional flows: the contexts ``(N, k)`` of ``x_init`` (needed with ``x_init``);
        None without ``x_init``: standard-normal draws.
      estimator: see the class attributes; None: :func:`default_estimator`.
      solver: None: ``FixedPointSolver()``.
      direction: ``'density'`` or ``'sampling'``.
      fresh_norms: see the class attributes.
    """
    if direction not in DIRECTIONS:
      raise ValueError(f"direction: expected one of {DIRECTIONS}, got {direction!r}")
    if getattr(model, "num_classes", 0):
      raise ValueError("model: a hybrid flow (num_classes > 0) is a classifier too; FlowDistribution takes "
                       "a density model (num_classes=0)")
    dimension = math.prod(model.data_shape)
    estimator = default_estimator(dimension) if estimator is None else estimator
    check_estimator(estimator)
    solver = FixedPointSolver() if solver is None else solver
    if not isinstance(solver, FixedPointSolver):
      raise TypeError(f"solver: expected a FixedPointSolver, got {solver!r}")
    init_key, data_key, context_key = jax.random.split(key, 3)
    context_size = int(getattr(model, "context_size", 0))
    if context_size and x_init is not None and context_init is None:
      raise ValueError("context_init: a conditional flow initialised on x_init needs their contexts, shape "
                       f"(N, {context_size})")
    if not context_size and context_init is not None:
      raise ValueError("context_init: the model is unconditional (context_size=0)")
    if x_init is None:
      x_init = jax.random.normal(data_key, (256, *model.data_shape), jnp.float32)
    x_init = jnp.asarray(x_init)
    if x_init.ndim != len(model.data_shape) + 1 or tuple(x_init.shape[1:]) != tuple(model.data_shape):
      raise ValueError(f"x_init: expected examples of shape (N, {', '.join(map(str, model.data_shape))}), got "
                       f"{tuple(x_init.shape)}")
    if context_size and context_init is None:
      context_init = jax.random.normal(context_key, (x_init.shape[0], context_size), jnp.float32)
    if context_init is not None:
      context_init = jnp.asarray(context_init)
      if context_init.shape != (x_init.shape[0], context_size):
        raise ValueError(f"context_init: expected shape ({x_init.shape[0]}, {context_size}), one context per "
                         f"example of x_init, got {tuple(context_init.shape)}")
    variables = jit_run_once(lambda key, x, c: model.init({"params": key, "logdet": key}, x, estimator=estimator,
                                                     context=c))(init_key, x_init, context_init)
    return cls(model=model, variables=dict(variables), estimator=estimator, solver=solver, direction=direction,
               fresh_norms=bool(fresh_norms))

  # ------------------------------------------------------------------------------------ shapes
  @property
  def event_shape(self) -> tuple[int, ...]:
    """Shape of one example, the model's ``data_shape``."""
    return tuple(int(n) for n in self.model.data_shape)

  @property
  def dimension(self) -> int:
    """``D``, the number of dimensions of one example (and of a base point)."""
    return math.prod(self.event_shape)

  @property
  def context_size(self) -> int:
    """``k``, the size of a context vector; 0 for an unconditional distribution."""
    return int(getattr(self.model, "context_size", 0))

  def _context(self, context: jax.typing.ArrayLike | None, batch_shape: tuple, method: str) -> jax.Array | None:
    """``context`` checked and broadcast to ``batch_shape``, flat: ``(prod(batch_shape), k)``; None if unconditional."""
    k = self.context_size
    if not k:
      if context is not None:
        raise ValueError(f"context: {method} of an unconditional distribution takes no context (the model "
                         f"has context_size=0)")
      return None
    if context is None:
      raise ValueError(f"context: {method} of this conditional distribution needs a context of shape (..., {k})")
    context = jnp.asarray(context)
    if not jnp.issubdtype(context.dtype, jnp.floating):
      raise TypeError(f"context: expected floating-point values, got dtype {context.dtype}")
    if context.ndim < 1 or context.shape[-1] != k:
      raise ValueError(f"context: expected shape (..., {k}), got {tuple(context.shape)}")
    try:
      context = jnp.broadcast_to(context, batch_shape + (k,))
    except ValueError:
      raise ValueError(f"context: its batch shape {tuple(context.shape[:-1])} does not broadcast to the "
                       f"input's batch shape {batch_shape}") from None
    return context.reshape((-1, k))

  def _batch(self, x: jax.typing.ArrayLike, name: str, trailing: tuple[int, ...]) -> tuple[jax.Array, tuple]:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise TypeError(f"{name}: expected floating-point values, got dtype {x.dtype}")
    if x.ndim < len(trailing) or tuple(x.shape[x.ndim - len(trailing):]) != trailing:
      raise ValueError(f"{name}: expected shape (..., {', '.join(map(str, trailing))}), got {tuple(x.shape)}")
    batch_shape = tuple(x.shape[:x.ndim - len(trailing)])
    return x.reshape((math.prod(batch_shape), *trailing)), batch_shape

  def _rngs(self, key: jax.Array | None, method: str) -> dict:
    if self.estimator.needs_key:
      if key is None:
        raise ValueError(f"key: {method} needs a PRNG key with the random estimator "
                         f"{self.estimator.describe()!r} (or create the distribution with ExactLogDet())")
      return {"logdet": key}
    return {}

  def _apply(self, *args, mutable: Sequence[str] = (), **kwargs):
    """``model.apply`` on the variables; returns ``(out, state)`` when ``mutable`` names collections."""
    collections = list(mutable) + (["spectral"] if self.fresh_norms else [])
    if not collections:
      return self.model.apply(self.variables, *args, **kwargs)
    out, state = self.model.apply(self.variables, *args, mutable=collections, **kwargs)
    return (out, state) if mutable else out

  # ---------------------------------------------------------------------- the two maps of the flow
  def _cheap(self, x: jax.Array, context: jax.Array | None, key: jax.Array | None, method: str
             ) -> tuple[jax.Array, jax.Array]:
    """``F`` (residual blocks forward) and ``log det J_F``: ``(N, *event) -> (N, D), (N,)``."""
    return self._apply(x, estimator=self.estimator, context=context, rngs=self._rngs(key, method),
                       method=self.model.forward_and_log_det)

  def _solved(self, z: jax.Array, context: jax.Array | None, key: jax.Array | None, method: str
              ) -> tuple[jax.Array, jax.Array, FixedPointInfo]:
    """``F^{-1}`` by fixed points, ``log det J_{F^-1}`` and the solver's report: ``(N, D) -> (N, *event)``."""
    (x, value), state = self._apply(z, estimator=self.estimator, solver=self.solver, context=context,
                                    rngs=self._rngs(key, method), method=self.model.inverse_and_log_det,
                                    mutable=[INVERSE_INFO])
    return x, value, inverse_info(state)

  def base_log_prob(self, u: jax.typing.ArrayLike, *, context: jax.typing.ArrayLike | None = None) -> jax.Array:
    """``log p_u(u)`` (``log p_u(u | c)``) of flat base points ``(..., D)`` (the model's prior)."""
    flat, batch_shape = self._batch(u, "u", (self.dimension,))
    context = self._context(context, batch_shape, "base_log_prob")
    return self._apply(flat, context=context, method=self.model.prior_log_prob).reshape(batch_shape)

  def forward_and_log_det(self, u: jax.typing.ArrayLike, *, key: jax.Array | None = None,
                          context: jax.typing.ArrayLike | None = None, report: bool = False):
    """Base points to data: ``(x, log|det dx/du|)`` for ``u`` of shape ``(..., D)``.

    Cheap with ``direction='sampling'``; a fixed point per block with ``'density'``.

    Args:
      u: base points.
      key: the estimator's PRNG key (random estimators only).
      context: conditional distributions: ``(..., k)``, broadcast against ``u``'s batch shape.
      report: also return the solver's :class:`~iresflow.core.FixedPointInfo` (per example; None
        where no fixed point was solved).

    Returns:
      ``x`` of shape ``(..., *event_shape)`` and the log-det ``(...)``; with ``report``, the report too.
    """
    flat, batch_shape = self._batch(u, "u", (self.dimension,))
    context = self._context(context, batch_shape, "forward_and_log_det")
    info = None
    if self.direction == "sampling":
      x, value = self._cheap(flat.reshape((-1, *self.event_shape)), context, key, "forward_and_log_det")
    else:
      x, value, info = self._solved(flat, context, key, "forward_and_log_det")
    out = (x.reshape(batch_shape + self.event_shape), value.reshape(batch_shape))
    return out + (info,) if report else out

  def inverse_and_log_det(self, x: jax.typing.ArrayLike, *, key: jax.Array | None = None,
                          context: jax.typing.ArrayLike | None = None, report: bool = False):
    """Data to base points: ``(u, log|det du/dx|)`` for ``x`` of shape ``(..., *event_shape)``.

    Cheap with ``direction='density'``; a fixed point per block with ``'sampling'``. Arguments and
    report as in :meth:`forward_and_log_det`; ``u`` has shape ``(..., D)``.
    """
    flat, batch_shape = self._batch(x, "x", self.event_shape)
    context = self._context(context, batch_shape, "inverse_and_log_det")
    info = None
    if self.direction == "density":
      u, value = self._cheap(flat, context, key, "inverse_and_log_det")
    else:
      u, value, info = self._solved(flat.reshape((-1, self.dimension)), context, key, "inverse_and_log_det")
    out = (u.reshape(batch_shape + (self.dimension,)), value.reshape(batch_shape))
    return out + (info,) if report else out

  # ----------------------------------------------------------------------------- the distribution
  def log_prob(self, x: jax.typing.ArrayLike, *, key: jax.Array | None = None,
               context: jax.typing.ArrayLike | None = None) -> jax.Array:
    """``log p(x) = log p_u(u) + log|det du/dx|`` (eq. 3), in nats, shape ``(...)``.

    Args:
      x: data of shape ``(..., *event_shape)``.
      key: PRNG key of a random estimator (the default for ``D > 16``: Russian roulette, unbiased).
      context: conditional distributions: ``(..., k)``, broadcast against ``x``'s batch shape;
        the result is ``log p(x | c)``.
    """
    if key is None and self.estimator.needs_key:
      self._rngs(None, "log_prob")  # the error names this method
    flat, batch_shape = self._batch(x, "x", self.event_shape)
    context = self._context(context, batch_shape, "log_prob")
    u, value = self.inverse_and_log_det(flat, key=key, context=context)
    return (self.base_log_prob(u, context=context) + value).reshape(batch_shape)

  def sample(self, key: jax.Array, n: int, *, context: jax.typing.ArrayLike | None = None,
             temperature: float = 1.0, report: bool = False):
    """``n`` samples of shape ``(n, *event_shape)`` (and the solver's report with ``report``).

    Conditional distributions: ``n`` samples for each context of ``context`` (shape ``(..., k)``), of
    shape ``(n, ..., *event_shape)``. ``temperature`` scales the base distribution's standard
    deviation (1: samples of this distribution; below 1: nearer its modes, as in Glow's figures).
    """
    x, _, info = self._sample(key, n, context, with_log_prob=False, temperature=temperature)
    return (x, info) if report else x

  def sample_and_log_prob(self, key: jax.Array, n: int, *, context: jax.typing.ArrayLike | None = None,
                          report: bool = False):
    """``n`` samples and their ``log p``, from one pass: ``(n, *event_shape)``, ``(n,)`` (report optional).

    Conditional distributions: shapes ``(n, ..., *event_shape)`` and ``(n, ...)`` for ``context`` of
    shape ``(..., k)``.
    """
    x, log_prob, info = self._sample(key, n, context, with_log_prob=True)
    return (x, log_prob, info) if report else (x, log_prob)

  def _sample(self, key: jax.Array, n: int, context, with_log_prob: bool, temperature: float = 1.0):
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
      raise ValueError(f"n: expected a positive int, got {n!r}")
    context_batch = ()
    if context is not None and self.context_size:
      context_batch = tuple(jnp.shape(context)[:-1])
    batch_shape = (n,) + context_batch
    context = self._context(context, batch_shape, "sample")
    total = math.prod(batch_shape)
    base_key, logdet_key = jax.random.split(key)
    u = self._apply(total, context=context, temperature=temperature, method=self.model.sample_prior,
                    rngs={"sample": base_key})
    if not with_log_prob and self.direction == "density":  # the inverse without its log-det
      x, state = self._apply(u, solver=self.solver, context=context, method=self.model.inverse,
                             mutable=[INVERSE_INFO])
      return x.reshape(batch_shape + self.event_shape), None, inverse_info(state)
    x, value, *info = self.forward_and_log_det(u, key=logdet_key if self.estimator.needs_key else None,
                                               context=context, report=True)
    log_prob = self._apply(u, context=context, method=self.model.prior_log_prob) - value
    return x.reshape(batch_shape + self.event_shape), log_prob.reshape(batch_shape), info[0]
