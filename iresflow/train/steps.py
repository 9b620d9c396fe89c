"""The pure train and evaluation steps, built from a task (``iresflow.train.tasks``).

``make_train_step`` returns ``step(state, batch) -> (state, metrics)``, ready for ``jax.jit`` with
shardings. Random numbers come from ``jax.random.fold_in(key, step)``, so a step's randomness depends
on the step number alone (resumed runs repeat it exactly, and the draws do not depend on how the
batch is split over devices). The spectral state is updated inside the step; a step whose loss or
gradients are not finite leaves the state unchanged and reports ``finite = False``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from iresflow.train.state import TrainState


def _all_finite(loss, grads) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]
  return jnp.logical_and(jnp.isfinite(loss), jnp.all(jnp.stack(leaves)))


def apply_gradients(state: TrainState, grads, spectral, optimizer: optax.GradientTransformation, ema_decay: float,
                    finite: jax.Array) -> TrainState:
  """One optimizer step, the EMA and the new spectral state; the old state where ``finite`` is False."""
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  # Warm-up of the average (as in TF's ExponentialMovingAverage with num_updates): early steps weigh more.
  decay = jnp.minimum(ema_decay, (1.0 + state.step) / (10.0 + state.step))
  ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, state.ema_params, params)
  new = state.replace(step=state.step + 1, params=params, spectral=spectral, opt_state=opt_state, ema_params=ema)
  return jax.tree.map(lambda old, updated: jnp.where(finite, updated, old), state, new)


def make_train_step(task, optimizer: optax.GradientTransformation, ema_decay: float, key: jax.Array) -> Callable:
  """``step(state, batch) -> (state, metrics)`` minimising ``task.loss``.

  ``metrics`` has ``loss``, ``grad_norm``, ``finite`` and the task's own metrics.
  """

  def train_step(state: TrainState, batch):
    step_key = jax.random.fold_in(key, state.step)
    loss_fn = lambda params: task.loss(params, state.spectral, batch, step_key)
    (loss, (spectral, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    finite = _all_finite(loss, grads)
    new_state = apply_gradients(state, grads, spectral, optimizer, ema_decay, finite)
    return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads), "finite": finite, **metrics}

  return train_step


def make_eval_step(task, key: jax.Array) -> Callable:
  """``eval(variables, *batch, index) -> per-example metrics`` with the task's evaluation estimator.

  The randomness of batch ``index`` (dequantisation, probes) is ``fold_in(key, index)``.
  """

  def eval_step(variables: dict, *batch_and_index):
    *batch, index = batch_and_index
    return task.evaluate_batch(variables, tuple(batch), jax.random.fold_in(key, index))

  return eval_step


class Divergence(NamedTuple):
  """Device-side record of the first step whose loss or gradients were not finite.

  Attributes:
    step: that step's number (the state's ``step`` when it ran), or -1 while every step was finite.
    loss: its loss.
  """

  step: jax.Array
  loss: jax.Array

  @classmethod
  def none(cls) -> "Divergence":
    return cls(jnp.asarray(-1, jnp.int32), jnp.asarray(0.0, jnp.float32))


def stop_at_first_non_finite(train_step: Callable) -> Callable:
  """``step(state, divergence, batch) -> (state, divergence, metrics)``: frozen after the first bad step.

  The train loop need not look at every step's ``finite`` flag (which would make the host wait for
  the device each step): after the first step whose loss or gradients are not finite, no later step
  changes the state, and ``divergence`` says which step it was. The host reads ``divergence`` every
  so often and before every checkpoint, so no checkpoint ever holds a state from after that step.
  """

  def guarded(state: TrainState, divergence: Divergence, batch):
    new_state, metrics = train_step(state, batch)
    healthy = divergence.step < 0
    first_bad = jnp.logical_and(healthy, jnp.logical_not(metrics["finite"]))
    divergence = Divergence(jnp.where(first_bad, state.step, divergence.step),
                            jnp.where(first_bad, metrics["loss"].astype(jnp.float32), divergence.loss))
    new_state = jax.tree.map(lambda old, new: jnp.where(healthy, new, old), state, new_state)
    return new_state, divergence, metrics

  return guarded
