"""Train state and optimizers.

The state is one pytree: step, ``params``, the ``spectral`` collection (norm-estimator vectors,
updated inside every step), the optax state and an exponential moving average of the parameters.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("adam", "adamax", "sgd")
SCHEDULES = ("constant", "cosine", "final_decay")
# ``'final_decay'``: the learning rate held after warm-up, then taken linearly to 0 over this last part of training.
FINAL_DECAY_FRACTION = 0.25


class TrainState(flax.struct.PyTreeNode):
  """Everything a step reads and writes; a pytree, so it checkpoints and shards as one."""

  step: jax.Array
  params: Any
  spectral: Any
  opt_state: Any
  ema_params: Any

  @classmethod
  def create(cls, variables: dict, optimizer: optax.GradientTransformation) -> "TrainState":
    params = variables["params"]
    return cls(step=jnp.asarray(0, jnp.int32), params=params, spectral=variables.get("spectral", {}),
               opt_state=optimizer.init(params), ema_params=jax.tree.map(jnp.copy, params))

  def variables(self, use_ema: bool = False) -> dict:
    """Flax variables for ``model.apply``: EMA or live parameters, with the spectral state."""
    variables = {"params": self.ema_params if use_ema else self.params}
    if self.spectral:
      variables["spectral"] = self.spectral
    return variables


def create_optimizer(name: str, learning_rate: float, *, num_steps: int, warmup_steps: int = 0,
                     schedule: str = "constant", grad_clip: float | None = None, weight_decay: float = 0.0,
                     momentum: float = 0.9) -> optax.GradientTransformation:
  """An optax chain: optional global-norm clipping, weight decay, the optimizer with warm-up and schedule.

  Args:
    name: ``'adam'``, ``'adamax'`` (the i-ResNet paper's) or ``'sgd'`` (Nesterov momentum).
    learning_rate: peak learning rate.
    num_steps: total steps (for the cosine and final-decay schedules).
    warmup_steps: linear warm-up from 0.
    schedule: after warm-up, ``'constant'``, ``'cosine'`` (to 0 at ``num_steps``) or ``'final_decay'``
      (constant, then linear to 0 over the last ``FINAL_DECAY_FRACTION`` of ``num_steps``).
    grad_clip: maximum global gradient norm, or None.
    weight_decay: for ``'adam'`` and ``'adamax'`` decoupled weight decay (AdamW, Loshchilov & Hutter
      2019: ``optax.adamw`` / ``optax.adamaxw``, each step subtracts ``learning_rate * weight_decay *
      param`` beside the Adam update, which the gradient's scaling does not touch); for ``'sgd'`` the
      classical L2 term ``weight_decay * param`` added to the gradient (the i-ResNet classifier's
      5e-4), which the momentum then carries. Applied to every parameter.
    momentum: SGD momentum.
  """
  if name not in OPTIMIZERS:
    raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {name!r}")
  if schedule not in SCHEDULES:
    raise ValueError(f"schedule: expected one of {SCHEDULES}, got {schedule!r}")
  if not learning_rate > 0:
    raise ValueError(f"learning_rate: expected a positive number, got {learning_rate}")
  if schedule == "cosine":
    lr = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(warmup_steps, 1), max(num_steps, warmup_steps + 1))
  elif schedule == "final_decay":
    decay_start = max(warmup_steps, int(round((1 - FINAL_DECAY_FRACTION) * num_steps)))
    lr = optax.join_schedules([optax.linear_schedule(0.0, learning_rate, warmup_steps),
                               optax.constant_schedule(learning_rate),
                               optax.linear_schedule(learning_rate, 0.0, max(num_steps - decay_start, 1))],
                              [warmup_steps, decay_start])
  elif warmup_steps:
    lr = optax.join_schedules([optax.linear_schedule(0.0, learning_rate, warmup_steps),
                               optax.constant_schedule(learning_rate)], [warmup_steps])
  else:
    lr = learning_rate
  if not weight_decay >= 0:
    raise ValueError(f"weight_decay: expected a non-negative number, got {weight_decay}")
  parts = []
  if grad_clip:
    parts.append(optax.clip_by_global_norm(grad_clip))
  if name == "adam":
    parts.append(optax.adamw(lr, weight_decay=weight_decay) if weight_decay else optax.adam(lr))
  elif name == "adamax":
    parts.append(optax.adamaxw(lr, weight_decay=weight_decay) if weight_decay else optax.adamax(lr))
  else:
    if weight_decay:
      parts.append(optax.add_decayed_weights(weight_decay))
    parts.append(optax.sgd(lr, momentum=momentum, nesterov=True))
  return optax.chain(*parts)
