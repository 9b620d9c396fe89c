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
  """Saves the train state every ``every`` steps (and on demand), keeps the newest ``max_to_keep``.

  Args:
    directory: where checkpoints go (created).
    max_to_keep: how many to keep.
  """

  def __init__(self, directory: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, todelete_subdir=TRASH_SUBDIR))
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
    """Restores ``step`` (default: the latest) as nested dicts of arrays, without a target structure."""
    step = self.latest_step() if step is None else step
    return self._manager.restore(step, args=ocp.args.StandardRestore())

  def close(self) -> None:
    self._manager.close()
