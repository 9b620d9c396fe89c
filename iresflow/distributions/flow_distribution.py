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

The bijector is the map from the base distribution to the data, as in distrax's ``Transformed``:
:meth:`FlowDistribution.forward_and_log_det` takes base points ``u`` (flat, ``(..., D)``) to data,
:meth:`FlowDistribution.inverse_and_log_det` data to base points.
"""

from __future__ import annotations

import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

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
  """

  model: Any = flax.struct.field(pytree_node=False)
  variables: dict
  estimator: LogDetEstimator = flax.struct.field(pytree_node=False)
  solver: FixedPointSolver = flax.struct.field(pytree_node=False, default=FixedPointSolver())
  direction: str = flax.struct.field(pytree_node=False, default="density")

  @classmethod
  def create(cls, key: jax.Array, model, *, x_init: jax.typing.ArrayLike | None = None,
             estimator: LogDetEstimator | None = None, solver: FixedPointSolver | None = None,
             direction: str = "density") -> "FlowDistribution":
    """Initialises ``model``'s variables from ``key`` and wraps them.

    Args:
      key: PRNG key of the initialisation.
      model: an ``IResNetFlow`` (its ``data_shape`` is the event shape).
      x_init: examples ``(N, *data_shape)`` for ActNorm's data-dependent initialisation (pass a batch
        of the training data); None: 256 standard-normal draws, so that ActNorm starts near the
        identity (the right start for variational inference and standardised data).
      estimator: see the class attributes; None: :func:`default_estimator`.
      solver: None: ``FixedPointSolver()``.
      direction: ``'density'`` or ``'sampling'``.
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
    init_key, data_key = jax.random.split(key)
    if x_init is None:
      x_init = jax.random.normal(data_key, (256, *model.data_shape), jnp.float32)
    x_init = jnp.asarray(x_init)
    if x_init.ndim != len(model.data_shape) + 1 or tuple(x_init.shape[1:]) != tuple(model.data_shape):
      raise ValueError(f"x_init: expected examples of shape (N, {', '.join(map(str, model.data_shape))}), got "
                       f"{tuple(x_init.shape)}")
    variables = jax.jit(lambda key, x: model.init({"params": key, "logdet": key}, x, estimator=estimator))(
        init_key, x_init)
    return cls(model=model, variables=dict(variables), estimator=estimator, solver=solver, direction=direction)

  # ------------------------------------------------------------------------------------ shapes
  @property
  def event_shape(self) -> tuple[int, ...]:
    """Shape of one example, the model's ``data_shape``."""
    return tuple(int(n) for n in self.model.data_shape)

  @property
  def dimension(self) -> int:
    """``D``, the number of dimensions of one example (and of a base point)."""
    return math.prod(self.event_shape)

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

  def _apply(self, *args, **kwargs):
    return self.model.apply(self.variables, *args, **kwargs)

  # ---------------------------------------------------------------------- the two maps of the flow
  def _cheap(self, x: jax.Array, key: jax.Array | None, method: str) -> tuple[jax.Array, jax.Array]:
    """``F`` (residual blocks forward) and ``log det J_F``: ``(N, *event) -> (N, D), (N,)``."""
    return self._apply(x, estimator=self.estimator, rngs=self._rngs(key, method),
                       method=self.model.forward_and_log_det)

  def _solved(self, z: jax.Array, key: jax.Array | None, method: str
              ) -> tuple[jax.Array, jax.Array, FixedPointInfo]:
    """``F^{-1}`` by fixed points, ``log det J_{F^-1}`` and the solver's report: ``(N, D) -> (N, *event)``."""
    (x, value), state = self._apply(z, estimator=self.estimator, solver=self.solver,
                                    rngs=self._rngs(key, method), method=self.model.inverse_and_log_det,
                                    mutable=[INVERSE_INFO])
    return x, value, inverse_info(state)

  def base_log_prob(self, u: jax.typing.ArrayLike) -> jax.Array:
    """``log p_u(u)`` of flat base points ``(..., D)`` (the model's prior)."""
    flat, batch_shape = self._batch(u, "u", (self.dimension,))
    return self._apply(flat, method=self.model.prior_log_prob).reshape(batch_shape)

  def forward_and_log_det(self, u: jax.typing.ArrayLike, *, key: jax.Array | None = None,
                          report: bool = False):
    """Base points to data: ``(x, log|det dx/du|)`` for ``u`` of shape ``(..., D)``.

    Cheap with ``direction='sampling'``; a fixed point per block with ``'density'``.

    Args:
      u: base points.
      key: the estimator's PRNG key (random estimators only).
      report: also return the solver's :class:`~iresflow.core.FixedPointInfo` (per example; None
        where no fixed point was solved).

    Returns:
      ``x`` of shape ``(..., *event_shape)`` and the log-det ``(...)``; with ``report``, the report too.
    """
    flat, batch_shape = self._batch(u, "u", (self.dimension,))
    info = None
    if self.direction == "sampling":
      x, value = self._cheap(flat.reshape((-1, *self.event_shape)), key, "forward_and_log_det")
    else:
      x, value, info = self._solved(flat, key, "forward_and_log_det")
    out = (x.reshape(batch_shape + self.event_shape), value.reshape(batch_shape))
    return out + (info,) if report else out

  def inverse_and_log_det(self, x: jax.typing.ArrayLike, *, key: jax.Array | None = None,
                          report: bool = False):
    """Data to base points: ``(u, log|det du/dx|)`` for ``x`` of shape ``(..., *event_shape)``.

    Cheap with ``direction='density'``; a fixed point per block with ``'sampling'``. Arguments and
    report as in :meth:`forward_and_log_det`; ``u`` has shape ``(..., D)``.
    """
    flat, batch_shape = self._batch(x, "x", self.event_shape)
    info = None
    if self.direction == "density":
      u, value = self._cheap(flat, key, "inverse_and_log_det")
    else:
      u, value, info = self._solved(flat.reshape((-1, self.dimension)), key, "inverse_and_log_det")
    out = (u.reshape(batch_shape + (self.dimension,)), value.reshape(batch_shape))
    return out + (info,) if report else out

  # ----------------------------------------------------------------------------- the distribution
  def log_prob(self, x: jax.typing.ArrayLike, *, key: jax.Array | None = None) -> jax.Array:
    """``log p(x) = log p_u(u) + log|det du/dx|`` (eq. 3), in nats, shape ``(...)``.

    Args:
      x: data of shape ``(..., *event_shape)``.
      key: PRNG key of a random estimator (the default for ``D > 16``: Russian roulette, unbiased).
    """
    if key is None and self.estimator.needs_key:
      self._rngs(None, "log_prob")  # the error names this method
    u, value = self.inverse_and_log_det(x, key=key)
    return self.base_log_prob(u) + value

  def sample(self, key: jax.Array, n: int, *, report: bool = False):
    """``n`` samples of shape ``(n, *event_shape)`` (and the solver's report with ``report``)."""
    x, _, info = self._sample(key, n, with_log_prob=False)
    return (x, info) if report else x

  def sample_and_log_prob(self, key: jax.Array, n: int, *, report: bool = False):
    """``n`` samples and their ``log p``, from one pass: ``(n, *event_shape)``, ``(n,)`` (report optional)."""
    x, log_prob, info = self._sample(key, n, with_log_prob=True)
    return (x, log_prob, info) if report else (x, log_prob)

  def _sample(self, key: jax.Array, n: int, with_log_prob: bool):
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
      raise ValueError(f"n: expected a positive int, got {n!r}")
    base_key, logdet_key = jax.random.split(key)
    u = self._apply(n, method=self.model.sample_prior, rngs={"sample": base_key})
    if not with_log_prob and self.direction == "density":  # the inverse without its log-det
      x, state = self._apply(u, solver=self.solver, method=self.model.inverse, mutable=[INVERSE_INFO])
      return x, None, inverse_info(state)
    x, value, *info = self.forward_and_log_det(u, key=logdet_key if self.estimator.needs_key else None,
                                               report=True)
    log_prob = self._apply(u, method=self.model.prior_log_prob) - value
    return x, log_prob, info[0]
