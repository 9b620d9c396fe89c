"""Fitting a :class:`FlowDistribution` in one call: to data (maximum likelihood) or to a target (VI).

Both run the trainer's own step (``iresflow.train.steps.make_train_step``: one optimizer step, the
norm estimators' state updated inside it, the state left unchanged by a step whose loss or gradients
are not finite), so there is one training step in the package. A non-finite step stops the fit with
an error naming it.

* :func:`fit` maximises ``log p(x)`` on arrays in memory, with a validation split, early stopping
  on the validation loss (the best parameters are returned) and a progress bar (flowjax's
  ``fit_to_data``).
* :func:`fit_variational` minimises ``KL(q || p)`` up to a constant, the negative ELBO
  ``E_q[log q(x) - log p~(x)]`` for an unnormalised target ``log p~`` (reparameterised samples), with
  the flow in its cheap sampling direction: ``x = F(u)``, ``log q(x) = log p_u(u) - log det J_F(u)``,
  no fixed point (flowjax's ``fit_to_key_based_loss`` with its ``ElboLoss``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from iresflow.distributions.flow_distribution import FlowDistribution
from iresflow.train.state import TrainState
from iresflow.train.steps import Divergence, make_train_step, stop_at_first_non_finite


@dataclasses.dataclass(frozen=True)
class _Objective:
  """A task for ``make_train_step``: ``loss(params, spectral, batch, key) -> (loss, (spectral, metrics))``.

  ``per_example(flow, batch)`` gets a :class:`_BoundFlow` (the model bound inside ``apply``, so the
  norm estimators' state updates) and returns per-example losses.
  """

  model: object
  estimator: object
  event_shape: tuple
  per_example: Callable

  def loss(self, params, spectral, batch, key):
    sample_key, logdet_key = jax.random.split(key)
    value, state = self.model.apply({"params": params, "spectral": spectral}, method=_bound_loss, objective=self,
                                    batch=batch, rngs={"sample": sample_key, "logdet": logdet_key},
                                    mutable=["spectral"])
    return jnp.mean(value), (state["spectral"], {})


def _bound_loss(model, *, objective: _Objective, batch):
  return objective.per_example(_BoundFlow(model, objective.estimator, objective.event_shape), batch)


@dataclasses.dataclass(frozen=True)
class _BoundFlow:
  """The distribution's cheap pass with the model bound inside ``apply`` (variables implicit)."""

  model: object
  estimator: object
  event_shape: tuple

  def log_prob(self, x, context=None):
    """Density direction: ``log p(x)`` (``log p(x | c)``) by the cheap forward pass."""
    z, value = self.model.forward_and_log_det(x, estimator=self.estimator, context=context)
    return self.model.prior_log_prob(z, context=context) + value

  def sample_and_log_prob(self, n):
    """Sampling direction: ``x = F(u)``, ``u ~ p_u``, and ``log q(x) = log p_u(u) - log det J_F(u)``."""
    u = self.model.sample_prior(n)
    x, value = self.model.forward_and_log_det(u.reshape((n, *self.event_shape)), estimator=self.estimator)
    return x.reshape((n, *self.event_shape)), self.model.prior_log_prob(u) - value


def _check_positive_int(value, name: str, allow_none: bool = False) -> None:
  if value is None and allow_none:
    return
  if not isinstance(value, int) or isinstance(value, bool) or value < 1:
    raise ValueError(f"{name}: expected a positive int{' or None' if allow_none else ''}, got {value!r}")


def _check_positive_seconds(max_seconds) -> None:
  if max_seconds is not None and not (isinstance(max_seconds, (int, float)) and max_seconds > 0):
    raise ValueError(f"max_seconds: expected a positive number of seconds or None, got {max_seconds!r}")


class _TrainingClock:
  """Seconds of training after the first (compiling) step, paused while validating."""

  def __init__(self, max_seconds: float | None):
    self.max_seconds, self.elapsed, self.running_since, self.compiled = max_seconds, 0.0, None, False

  def stepped(self, loss) -> None:
    if self.max_seconds is None:
      return
    jax.block_until_ready(loss)
    if not self.compiled:
      self.compiled, self.running_since = True, time.perf_counter()

  def seconds(self) -> float:
    return self.elapsed + (0.0 if self.running_since is None else time.perf_counter() - self.running_since)

  def out_of_time(self) -> bool:
    return self.max_seconds is not None and self.compiled and self.seconds() >= self.max_seconds

  def pause(self) -> None:
    self.elapsed, self.running_since = self.seconds(), None

  def resume(self) -> None:
    if self.compiled and self.running_since is None:
      self.running_since = time.perf_counter()


def _run_steps(dist: FlowDistribution, objective: _Objective, optimizer, key):
  # A copy: the steps donate the state's buffers, and the caller's distribution must stay usable.
  state = TrainState.create(jax.tree.map(jnp.copy, dist.variables), optimizer)
  step = jax.jit(stop_at_first_non_finite(make_train_step(objective, optimizer, 0.0, key)), donate_argnums=(0, 1))
  return state, step, Divergence.none()


def _raise_if_diverged(divergence: Divergence, what: str) -> None:
  first_bad = int(divergence.step)
  if first_bad >= 0:
    raise FloatingPointError(f"{what}: step {first_bad} had a non-finite loss or gradients "
                             f"(loss={float(divergence.loss)}); stopped there. Lower the learning rate "
                             f"(optimizer=) or clip the gradients (optax.clip_by_global_norm).")


def _with_state(dist: FlowDistribution, state: TrainState) -> FlowDistribution:
  return dist.replace(variables=state.variables())


def fit(key: jax.Array, dist: FlowDistribution, data: jax.typing.ArrayLike, *,
        context: jax.typing.ArrayLike | None = None, optimizer: optax.GradientTransformation | None = None,
        batch_size: int = 128, max_epochs: int = 100, max_steps: int | None = None,
        max_seconds: float | None = None, val_fraction: float = 0.1, patience: int = 5, progress: bool = True
        ) -> tuple[FlowDistribution, dict[str, list[float]]]:
  """Maximum likelihood on ``data`` with a validation split and early stopping.

  Args:
    key: PRNG key of the split, the batches' order and the estimator's draws.
    dist: the distribution to train (``direction='density'``: ``log p`` is the cheap pass).
    data: examples ``(N, *dist.event_shape)``, floating point.
    context: conditional distributions: the context of each example, ``(N, k)``; the fit maximises
      ``log p(x | c)`` (conditional density estimation, e.g. a posterior ``p(theta | x)`` from
      simulations).
    optimizer: default ``optax.adam(1e-3)`` with gradients clipped to norm 1.
    batch_size: examples per step (at most the training split's size).
    max_epochs: passes over the training split.
    max_steps: stop after this many steps in all (None: no limit).
    max_seconds: stop after the first step that ends this many seconds of training (not counting the
      first step, which compiles, or validation) in all (None: no limit).
    val_fraction: share of ``data`` held out for validation (0: none, no early stopping).
    patience: epochs without a better validation loss before stopping.
    progress: show a progress bar (steps, the loss; per epoch the train and validation losses).

  Returns:
    The distribution with the parameters of the best validation loss (the last ones without a
    validation split), and ``{'train': [...], 'val': [...]}``: mean negative log-likelihood per epoch.

  Raises:
    FloatingPointError: a step's loss or gradients were not finite; names the step.
  """
  if dist.direction != "density":
    raise ValueError("dist: fit trains the density direction (direction='density'); a flow in the sampling "
                     "direction is fitted to a target with fit_variational")
  data = np.asarray(data)
  if not np.issubdtype(data.dtype, np.floating) or data.shape[1:] != dist.event_shape or len(data) < 2:
    shape = ", ".join(map(str, dist.event_shape))
    raise ValueError(f"data: expected floating-point examples of shape (N >= 2, {shape}), got {data.dtype} "
                     f"{data.shape}")
  if not np.all(np.isfinite(data)):
    raise ValueError("data: contains NaN or infinite values")
  if dist.context_size:
    if context is None:
      raise ValueError(f"context: a conditional distribution is fitted to (data, context) pairs; pass context= of "
                       f"shape ({len(data)}, {dist.context_size})")
    context = np.asarray(context)
    if not np.issubdtype(context.dtype, np.floating) or context.shape != (len(data), dist.context_size):
      raise ValueError(f"context: expected floating-point contexts of shape ({len(data)}, {dist.context_size}), "
                       f"one per example of data, got {context.dtype} {context.shape}")
    if not np.all(np.isfinite(context)):
      raise ValueError("context: contains NaN or infinite values")
  elif context is not None:
    raise ValueError("context: the distribution is unconditional (its model has context_size=0)")
  if not 0.0 <= val_fraction < 1.0:
    raise ValueError(f"val_fraction: expected a value in [0, 1), got {val_fraction}")
  for value, name in ((batch_size, "batch_size"), (max_epochs, "max_epochs"), (patience, "patience")):
    _check_positive_int(value, name)
  _check_positive_int(max_steps, "max_steps", allow_none=True)
  _check_positive_seconds(max_seconds)

  split_key, order_key, step_key, val_key = jax.random.split(key, 4)
  order = np.asarray(jax.random.permutation(split_key, len(data)))
  n_val = int(round(val_fraction * len(data))) if val_fraction > 0 else 0
  if val_fraction > 0 and not 1 <= n_val < len(data):
    raise ValueError(f"val_fraction: {val_fraction} of {len(data)} examples leaves no validation or no training data")
  pairs = (data, context)  # context None: unconditional
  train = jax.tree.map(lambda a: a[order[n_val:]], pairs)
  val = jax.tree.map(lambda a: a[order[:n_val]], pairs)
  n_train = len(train[0])
  batch_size = min(batch_size, n_train)
  optimizer = optimizer or optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))

  objective = _Objective(dist.model, dist.estimator, dist.event_shape, lambda flow, xc: -flow.log_prob(*xc))
  state, step, divergence = _run_steps(dist, objective, optimizer, step_key)

  @jax.jit
  def val_loss(variables, xc, key):
    x, c = xc
    return -dist.replace(variables=variables).log_prob(x, key=key, context=c)

  def validation(variables) -> float:
    values = [val_loss(variables, jax.tree.map(lambda a, i=i: a[i:i + batch_size], val),
                       jax.random.fold_in(val_key, i)) for i in range(0, n_val, batch_size)]
    return float(jnp.mean(jnp.concatenate(values)))

  losses = {"train": [], "val": []}
  best, best_loss, waited, steps = None, math.inf, 0, 0
  steps_per_epoch = n_train // batch_size
  total_steps = max_epochs * steps_per_epoch if max_steps is None else min(max_steps, max_epochs * steps_per_epoch)
  if max_seconds is not None:  # the budget decides: a step count would promise a time that will not come
    total_steps = None
  bar = tqdm(total=total_steps, desc="fit", unit="step", disable=not progress, dynamic_ncols=True, mininterval=1.0)
  rng = np.random.default_rng(np.asarray(jax.random.key_data(order_key)).ravel().tolist())
  clock = _TrainingClock(max_seconds)
  for epoch in range(max_epochs):
    permutation = rng.permutation(n_train)
    epoch_losses = []
    for b in range(steps_per_epoch):
      if clock.out_of_time():
        break
      indices = permutation[b * batch_size:(b + 1) * batch_size]
      batch = jax.tree.map(lambda a, indices=indices: jnp.asarray(a[indices]), train)
      state, divergence, metrics = step(state, divergence, batch)
      clock.stepped(metrics["loss"])
      epoch_losses.append(metrics["loss"])
      steps += 1
      bar.update(1)
      if b % 50 == 49:
        bar.set_postfix(epoch=epoch, loss=f"{float(metrics['loss']):.4f}", refresh=False)
      if max_steps is not None and steps >= max_steps:
        break
    _raise_if_diverged(divergence, "fit")
    if not epoch_losses:  # the time ran out at the end of the last epoch
      break
    losses["train"].append(float(jnp.mean(jnp.stack(epoch_losses))))
    clock.pause()
    if n_val:
      losses["val"].append(validation(state.variables()))
      if losses["val"][-1] < best_loss:
        # A copy: the next step donates the state's buffers.
        best, best_loss, waited = jax.tree.map(jnp.copy, state.variables()), losses["val"][-1], 0
      else:
        waited += 1
      bar.set_postfix(epoch=epoch, train=f"{losses['train'][-1]:.4f}", val=f"{losses['val'][-1]:.4f}")
    else:
      best = state.variables()
      bar.set_postfix(epoch=epoch, train=f"{losses['train'][-1]:.4f}")
    clock.resume()
    if waited >= patience or (max_steps is not None and steps >= max_steps) or clock.out_of_time():
      break
  bar.close()
  return dist.replace(variables=state.variables() if best is None else best), losses


def fit_variational(key: jax.Array, dist: FlowDistribution, log_density: Callable[[jax.Array], jax.Array], *,
                    optimizer: optax.GradientTransformation | None = None, steps: int = 1000,
                    max_seconds: float | None = None, samples_per_step: int = 64, progress: bool = True
                    ) -> tuple[FlowDistribution, list[float]]:
  """Variational inference: minimises the negative ELBO ``E_q[log q(x) - log_density(x)]``.

  Args:
    key: PRNG key of the samples and the estimator's draws.
    dist: the variational family, in the sampling direction (``FlowDistribution.create(...,
      direction='sampling')``): samples and their ``log q`` need no fixed point.
    log_density: the unnormalised target log-density of one point ``x`` (shape ``event_shape``) to a
      scalar; it is ``vmap``-ed over the samples.
    optimizer: default ``optax.adam(1e-3)`` with gradients clipped to norm 1.
    steps: optimizer steps.
    max_seconds: stop earlier, after the step that ends this many seconds of training (not counting
      the first step, which compiles); None: no limit.
    samples_per_step: reparameterised samples per step.
    progress: show a progress bar with the loss.

  Returns:
    The fitted distribution and the loss per step (``KL(q || p) - log Z`` estimates).

  Raises:
    FloatingPointError: a step's loss or gradients were not finite; names the step.
  """
  if dist.direction != "sampling":
    raise ValueError("dist: fit_variational needs the cheap sampling direction (FlowDistribution.create(..., "
                     "direction='sampling')); in the density direction every sample would need a fixed point")
  if not callable(log_density):
    raise TypeError(f"log_density: expected a function of one point, got {log_density!r}")
  _check_positive_int(steps, "steps")
  _check_positive_int(samples_per_step, "samples_per_step")
  _check_positive_seconds(max_seconds)
  probe = jax.eval_shape(log_density, jax.ShapeDtypeStruct(dist.event_shape, jnp.float32))
  if probe.shape != ():
    raise ValueError(f"log_density: expected a scalar for one point of shape {dist.event_shape}, got shape "
                     f"{probe.shape}")
  optimizer = optimizer or optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))

  def negative_elbo(flow, _):
    x, log_q = flow.sample_and_log_prob(samples_per_step)
    return log_q - jax.vmap(log_density)(x)

  objective = _Objective(dist.model, dist.estimator, dist.event_shape, negative_elbo)
  state, step, divergence = _run_steps(dist, objective, optimizer, key)
  losses, check_every = [], 50
  bar = tqdm(range(steps), desc="fit_variational", disable=not progress, dynamic_ncols=True, mininterval=1.0)
  pending = []
  dummy = jnp.zeros(())
  clock = _TrainingClock(max_seconds)
  for i in bar:
    state, divergence, metrics = step(state, divergence, dummy)
    clock.stepped(metrics["loss"])
    pending.append(metrics["loss"])
    out_of_time = clock.out_of_time()
    if len(pending) == check_every or i == steps - 1 or out_of_time:
      _raise_if_diverged(divergence, "fit_variational")
      losses.extend(float(v) for v in jnp.stack(pending))
      pending = []
      bar.set_postfix(loss=f"{losses[-1]:.4f}")
    if out_of_time:
      break
  bar.close()
  return _with_state(dist, state), losses
