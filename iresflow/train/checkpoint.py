"""Orbax checkpoints of the train state: atomic (written aside, then renamed), resumable.

Both ends of a checkpoint's life are atomic renames, so a run killed at any moment (SIGKILL, pre-emption)
leaves only whole checkpoints behind: Orbax writes a step into a temporary directory and renames it into
place, and an old step is retired by renaming it into ``TRASH_SUBDIR`` (Orbax's own deletion removes
files one by one, so a kill in the middle would leave a half-deleted step that still looks like a
checkpoint). The trash is emptied after each save and when a Checkpointer opens the directory.
"""

from __future__ import annotations

import os
import shutil

import jax
import orbax.checkpoint as ocp

TRASH_SUBDIR = "trash"


class Checkpointer:
  """Saves train states (atomically), keeps the newest ``max_to_keep``, restores them.

  Args:
    directory: where checkpoints go (created).
    max_to_keep: how many to keep.
  """

  def __init__(self, directory: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, todelete_subdir=TRASH_SUBDIR),
        item_handlers=ocp.StandardCheckpointHandler())
    self._empty_trash()

  def _empty_trash(self) -> None:
    if jax.process_index() == 0:
      shutil.rmtree(os.path.join(self.directory, TRASH_SUBDIR), ignore_errors=True)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state) -> None:
    self._manager.save(step, args=ocp.args.StandardSave(state))
    self._manager.wait_until_finished()
    self._empty_trash()

  def restore(self, state_like, step: int | None = None):
    """Restores ``step`` (default: the latest) into the structure and shardings of ``state_like``."""
    step = self.latest_step() if step is None else step
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_like)
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def restore_raw(self, step: int | None = None) -> dict:
    """Restores ``step`` (default: the latest) as nested dicts of arrays on this process's first device.

    Needs no target structure, and works whatever topology wrote the checkpoint (e.g. a checkpoint
    of a multi-host run read on one machine, as ``load_variables`` and ``experiments/certify.py`` do).
    """
    step = self.latest_step() if step is None else step
    metadata = self._manager.item_metadata(step)
    metadata = getattr(metadata, "item_metadata", metadata)  # the tree inside Orbax's step metadata
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device), metadata)
    return self._manager.restore(step, args=ocp.args.StandardRestore(target))

  def close(self) -> None:
    self._manager.close()
