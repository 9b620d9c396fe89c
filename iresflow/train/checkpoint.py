"""Orbax checkpoints of the train state: atomic (written aside, then renamed), resumable."""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves the train state every ``every`` steps (and on demand), keeps the newest ``max_to_keep``.

  Args:
    directory: where checkpoints go (created).
    max_to_keep: how many to keep.
  """

  def __init__(self, directory: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state) -> None:
    self._manager.save(step, args=ocp.args.StandardSave(state))
    self._manager.wait_until_finished()

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
