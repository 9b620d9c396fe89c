"""Data parallelism over every device: a ``('data',)`` mesh, batch split, parameters replicated.

One pure step is ``jax.jit``-compiled with ``NamedSharding``s; XLA inserts the gradient all-reduce.
On several hosts call :func:`initialize_distributed` first; each process then feeds its own slice of
the global batch and :func:`shard_batch` assembles the global array without a host round trip.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def initialize_distributed(**kwargs) -> None:
  """``jax.distributed.initialize(**kwargs)`` for multi-host runs (no-op for one process)."""
  if kwargs.get("num_processes", 1) > 1 or kwargs.get("coordinator_address"):
    jax.distributed.initialize(**kwargs)


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh named ``'data'`` over ``devices`` (default: all global devices)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec("data"))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  """Raises ``ValueError`` unless the global batch splits evenly over the mesh's devices."""
  if batch_size % mesh.size:
    raise ValueError(f"batch_size: {batch_size} is not divisible by the {mesh.size} devices of the "
                     f"'data' mesh; use a multiple of {mesh.size}")


def shard_batch(mesh: Mesh, local_batch: np.ndarray) -> jax.Array:
  """Assembles the global batch from each process's local slice, split along ``'data'``."""
  sharding = batch_sharded(mesh)
  global_shape = (local_batch.shape[0] * jax.process_count(),) + local_batch.shape[1:]
  return jax.make_array_from_process_local_data(sharding, local_batch, global_shape)
