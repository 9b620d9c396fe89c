"""Pure train and evaluation steps for density estimation and classification.

Each ``make_*`` returns a function of arrays only, ready for ``jax.jit`` with shardings. Random
numbers come from ``jax.random.fold_in(key, step)``, so a step's randomness depends on the step
number alone (resumed runs repeat it exactly, and the draws do not depend on how the batch is split
over devices). The spectral state is updated inside the train step; a step whose loss or gradients
are not finite leaves the state unchanged and reports ``finite = False``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from iresflow.data.transforms import bits_per_dim, dequantize, logit_transform
from iresflow.nn.block import LogDetOptions
from iresflow.train.state import TrainState


@dataclasses.dataclass(frozen=True)
class DensityPreprocessing:
  """How data reach the flow, and how log-likelihoods become bits/dim.

  Attributes:
    num_levels: discrete levels of the data (None: continuous data, e.g. 2-D toys; loss in nats).
    logit_alpha: logit transform parameter, or None for ``x - 0.5`` (a shift, log-det 0).
  """

  num_levels: int | None = 256
  logit_alpha: float | None = None

  def __call__(self, batch: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(x, log-det of the preprocessing)`` for a batch of integers (or continuous data)."""
    if self.num_levels is None:
      return batch.astype(jnp.float32), jnp.zeros((batch.shape[0],), jnp.float32)
    x = dequantize(batch, key, self.num_levels)
    if self.logit_alpha is None:
      return x - 0.5, jnp.zeros((batch.shape[0],), jnp.float32)
    return logit_transform(x, self.logit_alpha)

  def loss_per_example(self, log_prob: jax.Array, dim: int) -> jax.Array:
    """Bits/dim for discrete data, negative log-likelihood (nats) for continuous data."""
    if self.num_levels is None:
      return -log_prob
    return bits_per_dim(log_prob, dim, self.num_levels)


def _finite_update(state: TrainState, new: TrainState, finite: jax.Array) -> TrainState:
  return jax.tree.map(lambda a, b: jnp.where(finite, b, a), state, new)


def _apply_gradients(state: TrainState, grads, spectral, optimizer, ema_decay: float, finite) -> TrainState:
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  # Warm-up of the average (as in TF's ExponentialMovingAverage with num_updates): early steps weigh more.
  decay = jnp.minimum(ema_decay, (1.0 + state.step) / (10.0 + state.step))
  ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, state.ema_params, params)
  new = state.replace(step=state.step + 1, params=params, spectral=spectral, opt_state=opt_state, ema_params=ema)
  return _finite_update(state, new, finite)


def _all_finite(loss, grads) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]
  return jnp.logical_and(jnp.isfinite(loss), jnp.all(jnp.stack(leaves)))


def make_density_train_step(model, optimizer: optax.GradientTransformation, preprocessing: DensityPreprocessing,
                            logdet: LogDetOptions, ema_decay: float, key: jax.Array,
                            hybrid_weight: float | None = None) -> Callable:
  """``step(state, batch) -> (state, metrics)`` maximising ``log p`` with the given log-det estimator.

  With ``hybrid_weight`` (a hybrid ``IResNetFlow`` with ``num_classes > 0``) the batch is
  ``(images, labels)`` and the loss is ``bits/dim + hybrid_weight * cross-entropy``.
  """
  dim = math.prod(model.data_shape)
  hybrid = hybrid_weight is not None

  def train_step(state: TrainState, batch):
    images, labels = batch if hybrid else (batch, None)
    step_key = jax.random.fold_in(key, state.step)
    data_key, logdet_key = jax.random.split(step_key)
    x, pre_logdet = preprocessing(images, data_key)

    def loss_fn(params):
      out, updated = model.apply({"params": params, "spectral": state.spectral}, x, logdet,
                                 rngs={"logdet": logdet_key}, mutable=["spectral"])
      log_prob, logits = out if hybrid else (out, None)
      density_loss = jnp.mean(preprocessing.loss_per_example(log_prob + pre_logdet, dim))
      aux = {"spectral": updated["spectral"], "density_loss": density_loss}
      if not hybrid:
        return density_loss, aux
      cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      aux.update(cross_entropy=cross_entropy, accuracy=jnp.mean(jnp.argmax(logits, -1) == labels))
      return density_loss + hybrid_weight * cross_entropy, aux

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    finite = _all_finite(loss, grads)
    new_state = _apply_gradients(state, grads, aux.pop("spectral"), optimizer, ema_decay, finite)
    return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads), "finite": finite, **aux}

  return train_step


def make_density_eval_step(model, preprocessing: DensityPreprocessing, logdet: LogDetOptions,
                           key: jax.Array) -> Callable:
  """``eval(variables, batch, index) -> per-example loss`` (bits/dim or nats) with ``logdet``.

  For a hybrid model it returns ``(loss, predicted class)``.
  """
  dim = math.prod(model.data_shape)

  def eval_step(variables: dict, batch: jax.Array, index: jax.Array):
    data_key, logdet_key = jax.random.split(jax.random.fold_in(key, index))
    x, pre_logdet = preprocessing(batch, data_key)
    out = model.apply(variables, x, logdet, rngs={"logdet": logdet_key})
    if model.num_classes:
      log_prob, logits = out
      return preprocessing.loss_per_example(log_prob + pre_logdet, dim), jnp.argmax(logits, -1)
    return preprocessing.loss_per_example(out + pre_logdet, dim)

  return eval_step


def make_classifier_train_step(model, optimizer: optax.GradientTransformation, ema_decay: float,
                               num_levels: int) -> Callable:
  """``step(state, (images, labels)) -> (state, metrics)`` minimising cross-entropy."""

  def train_step(state: TrainState, batch: tuple[jax.Array, jax.Array]):
    images, labels = batch
    x = images.astype(jnp.float32) / (num_levels - 1) - 0.5

    def loss_fn(params):
      variables = {"params": params}
      if state.spectral:
        variables["spectral"] = state.spectral
        logits, updated = model.apply(variables, x, mutable=["spectral"])
        spectral = updated["spectral"]
      else:
        logits, spectral = model.apply(variables, x), state.spectral
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, (spectral, jnp.mean(jnp.argmax(logits, -1) == labels))

    (loss, (spectral, accuracy)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    finite = _all_finite(loss, grads)
    new_state = _apply_gradients(state, grads, spectral, optimizer, ema_decay, finite)
    return new_state, {"loss": loss, "accuracy": accuracy, "grad_norm": optax.tree.norm(grads),
                       "finite": finite}

  return train_step


def make_classifier_eval_step(model, num_levels: int) -> Callable:
  """``eval(variables, images, labels) -> per-example correctness (0/1)``."""

  def eval_step(variables: dict, images: jax.Array, labels: jax.Array):
    x = images.astype(jnp.float32) / (num_levels - 1) - 0.5
    return (jnp.argmax(model.apply(variables, x), -1) == labels).astype(jnp.float32)

  return eval_step

