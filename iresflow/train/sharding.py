"""Data parallelism over every device: a ``('data',)`` mesh, batch split, parameters replicated.

One pure step is ``jax.jit``-compiled with ``NamedSharding``s; XLA inserts the gradient all-reduce.
On several hosts call :func:`initialize_distributed` first; each process then feeds its own slice of
the global batch and :func:`shard_batch` assembles the global array without a host round trip.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, force: bool = False) -> None:
  """``jax.distributed.initialize`` for multi-host runs; a no-op for one process unless ``force``.

  With no arguments and ``force=True`` JAX detects the cluster (TPU pods, SLURM). On CPU hosts the
  gloo collectives are selected, so CPU-only clusters (and tests on loopback) work too.
  """
  if not force and not coordinator_address and not (num_processes or 1) > 1:
    return
  # Must run before anything touches a JAX backend. Gloo only affects CPU collectives.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id)


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh named ``'data'`` over ``devices`` (default: all global devices)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec("data"))


def check_batch_size(batch_size: int, mesh: Mesh, name: str = "batch_size") -> None:
  """Raises ``ValueError`` (naming ``name``) unless the global batch splits evenly over the mesh's devices."""
  if batch_size % mesh.size:
    raise ValueError(f"{name}: {batch_size} is not divisible by the {mesh.size} devices of the "
                     f"'data' mesh; use a multiple of {mesh.size}")


def shard_batch(mesh: Mesh, local_batch: np.ndarray) -> jax.Array:
  """Assembles the global batch from each process's local slice, split along ``'data'``."""
  sharding = batch_sharded(mesh)
  global_shape = (local_batch.shape[0] * jax.process_count(),) + local_batch.shape[1:]
  return jax.make_array_from_process_local_data(sharding, local_batch, global_shape)
