"""Run as a subprocess with 4 forced CPU devices: the sharded train step equals the single-device one.

Prints one JSON line with the largest differences; tests/train/test_sharding.py checks them.
"""

import json
import sys

import jax

jax.config.update("jax_num_cpu_devices", 4)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from iresflow.data import load_image_dataset  # noqa: E402
from iresflow.models import IResNetFlow  # noqa: E402
from iresflow.nn import LogDetOptions  # noqa: E402
from iresflow.train import TrainState, create_optimizer, sharding, steps  # noqa: E402


def run(devices, batches, model, variables, optimizer, preprocessing):
  mesh = sharding.data_mesh(devices)
  step = steps.make_density_train_step(model, optimizer, preprocessing, LogDetOptions("series", n_terms=3),
                                       0.9, jax.random.key(1))
  step = jax.jit(step, out_shardings=(sharding.replicated(mesh), sharding.replicated(mesh)))
  state = jax.device_put(TrainState.create(variables, optimizer), sharding.replicated(mesh))
  losses = []
  for batch in batches:
    state, metrics = step(state, sharding.shard_batch(mesh, batch))
    losses.append(float(metrics["loss"]))
  return jax.device_get(state), losses, len(state.params["stage_steps_0"]["block"]["g"]["layer0"]["kernel"]
                                            .sharding.device_set)


def main():
  assert jax.device_count() == 4, jax.devices()
  data = load_image_dataset("digits")
  batches = [data.train_images[i * 16:(i + 1) * 16] for i in range(3)]
  model = IResNetFlow(data_shape=(8, 8, 1), stages=(1, 1), hidden=8)
  preprocessing = steps.DensityPreprocessing(17)
  x0, _ = preprocessing(jnp.asarray(batches[0]), jax.random.key(0))
  variables = model.init(jax.random.key(0), x0)
  optimizer = create_optimizer("adam", 1e-2, num_steps=3)
  single, single_losses, _ = run(jax.devices()[:1], batches, model, variables, optimizer, preprocessing)
  sharded, sharded_losses, n_devices = run(jax.devices(), batches, model, variables, optimizer, preprocessing)
  diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))),
                       single.params, sharded.params)
  # The spectral states are compared by their effect: the normalised model they define. (A vector u
  # in a degenerate top singular subspace is not unique; rounding may pick another one with the same
  # sigma.)
  x_check, _ = preprocessing(jnp.asarray(batches[0]), jax.random.key(5))
  log_prob = lambda state: model.apply({"params": state.params, "spectral": state.spectral}, x_check,
                                       LogDetOptions("exact"))
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
