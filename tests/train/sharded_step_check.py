"""Run as a subprocess with 4 forced CPU devices: the sharded train step equals the single-device one.

Both runs use the state, task and optimizer of one ``setup_training`` and the step it builds
(``stop_at_first_non_finite(make_train_step(...))``), i.e. exactly what ``train_and_evaluate`` runs. Prints one JSON
line with the largest differences; tests/train/test_sharding.py checks them.
"""

import json
import sys

import jax

jax.config.update("jax_num_cpu_devices", 4)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from iresflow.nn import ExactLogDet  # noqa: E402
from iresflow.train import TrainingData, default_config, setup_training, sharding  # noqa: E402
from iresflow.train.steps import Divergence, make_train_step, stop_at_first_non_finite  # noqa: E402


def tiny_config():
  config = default_config()
  config.model = dict(stages=(1, 1), residual=dict(hidden=8, constraint=dict(coeff=0.9)))
  config.batch_size = 16
  config.eval_batch_size = 16
  # SGD, not Adam: Adam divides each gradient entry by its own magnitude, so an entry whose gradient is
  # ~0 at initialisation (ActNorm's biases: data-initialised to zero-mean outputs) moves by up to the
  # learning rate whichever way float32 rounding tips it, and the comparison would measure that.
  config.optimizer = "sgd"
  config.learning_rate = 1e-2
  config.warmup_steps = 0
  config.ema_decay = 0.9
  config.estimator.n_terms = 3
  return config


def run(training, devices):
  """Three steps of ``training``'s step, jitted for a mesh of ``devices``, from its initial state."""
  mesh = sharding.data_mesh(devices)
  replicated = sharding.replicated(mesh)
  step = make_train_step(training.task, training.optimizer, training.config.ema_decay, training.keys["step"])
  step = jax.jit(stop_at_first_non_finite(step), out_shardings=(replicated, replicated, replicated))
  state, divergence, losses = jax.device_put(training.state, replicated), Divergence.none(), []
  for i in range(3):
    batch = tuple(sharding.shard_batch(mesh, part) for part in training.local_batch(i))
    state, divergence, metrics = step(state, divergence, batch)
    losses.append(float(metrics["loss"]))
  n_devices = len(state.params["stage_steps_0"]["block"]["g"]["layer0"]["kernel"].sharding.device_set)
  return jax.device_get(state), losses, n_devices


def main():
  assert jax.device_count() == 4, jax.devices()
  data = TrainingData.load(tiny_config())
  training = setup_training(tiny_config(), data=data, mesh=sharding.data_mesh(jax.devices()[:1]))
  single, single_losses, _ = run(training, jax.devices()[:1])
  sharded, sharded_losses, n_devices = run(training, jax.devices())
  diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))),
                       single.params, sharded.params)
  # The spectral states are compared by their effect: the normalised model they define. (A vector u
  # in a degenerate top singular subspace is not unique; rounding may pick another one with the same
  # sigma.)
  model, task = training.model, training.task
  x_check = task.model_input(jax.random.key(5), jnp.asarray(data.train[:16]))
  log_prob = jax.jit(lambda state: model.apply({"params": state.params, "spectral": state.spectral}, x_check,
                                               estimator=ExactLogDet()))
  mixed = single.replace(spectral=sharded.spectral)
  spectral_effect = float(np.max(np.abs(np.asarray(log_prob(single)) - np.asarray(log_prob(mixed)))))
  try:
    sharding.check_batch_size(6, sharding.data_mesh())
    divisible_error = ""
  except ValueError as error:
    divisible_error = str(error)
  print(json.dumps({"param_diff": max(jax.tree.leaves(diffs)), "spectral_effect": spectral_effect,
                    "single_losses": single_losses, "sharded_losses": sharded_losses,
                    "param_devices": n_devices, "divisible_error": divisible_error}))


if __name__ == "__main__":
  sys.exit(main())
