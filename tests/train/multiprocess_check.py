"""Run as one of N processes (jax.distributed on CPU, loopback): a few data-parallel train steps.

    python multiprocess_check.py PROCESS_ID NUM_PROCESSES PORT OUTPUT.npz

Each process feeds its slice of every global batch (``BatchSampler.local_indices``), assembled with
``jax.make_array_from_process_local_data``; process 0 writes the final parameters. With
NUM_PROCESSES=1 the same script is the single-process reference.
"""

import sys

import jax

process_id, num_processes, port, output = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
from iresflow.train import sharding  # noqa: E402

if num_processes > 1:
  sharding.initialize_distributed(coordinator_address=f"127.0.0.1:{port}", num_processes=num_processes,
                                  process_id=process_id)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from iresflow.data import BatchSampler, load_image_dataset  # noqa: E402
from iresflow.models import IResNetFlow  # noqa: E402
from iresflow.nn import LogDetOptions  # noqa: E402
from iresflow.train import TrainState, create_optimizer, steps  # noqa: E402


def main():
  data = load_image_dataset("digits").train_images
  sampler = BatchSampler(len(data), 16, seed=0, process_index=jax.process_index(),
                         process_count=jax.process_count())
  model = IResNetFlow(data_shape=(8, 8, 1), stages=(1, 1), hidden=8)
  preprocessing = steps.DensityPreprocessing(17)
  x0, _ = preprocessing(jnp.asarray(data[sampler.global_indices(0)]), jax.random.key(0))
  variables = jax.jit(model.init)(jax.random.key(0), x0)  # identical on every process
  optimizer = create_optimizer("adam", 1e-2, num_steps=3)
  mesh = sharding.data_mesh()
  step = steps.make_density_train_step(model, optimizer, preprocessing, LogDetOptions("series", n_terms=3),
                                       0.9, jax.random.key(1))
  step = jax.jit(step, out_shardings=(sharding.replicated(mesh), sharding.replicated(mesh)))
  state = jax.device_put(TrainState.create(variables, optimizer), sharding.replicated(mesh))
  losses = []
  for i in range(3):
    state, metrics = step(state, sharding.shard_batch(mesh, data[sampler.local_indices(i)]))
    losses.append(float(metrics["loss"]))
  leaves = [np.asarray(jax.device_get(leaf)) for leaf in jax.tree.leaves(state.params)]
  if jax.process_index() == 0:
    np.savez(output, *leaves, losses=np.asarray(losses), devices=jax.device_count())


if __name__ == "__main__":
  main()
