"""Checkpoints retire old steps by an atomic rename, so no half-deleted step is ever listed."""

import os

import numpy as np

from iresflow.train.checkpoint import TRASH_SUBDIR, Checkpointer


def _state(step):
  return {"step": np.int32(step), "weights": np.full((3,), float(step))}


def test_keeps_the_newest_steps_and_restores_them(tmp_path):
  checkpointer = Checkpointer(str(tmp_path), max_to_keep=2)
  for step in (5, 10, 15):
    checkpointer.save(step, _state(step))
  assert checkpointer.all_steps() == [10, 15]
  assert checkpointer.latest_step() == 15
  restored = checkpointer.restore_raw(10)
  np.testing.assert_array_equal(restored["weights"], np.full((3,), 10.0))
  # The retired step went through the trash, which is emptied after the save.
  assert sorted(os.listdir(tmp_path)) == ["10", "15"]
  checkpointer.close()


def test_a_step_killed_halfway_through_deletion_is_not_a_checkpoint(tmp_path):
  checkpointer = Checkpointer(str(tmp_path), max_to_keep=2)
  checkpointer.save(5, _state(5))
  checkpointer.close()
  # What a kill during deletion leaves: the retired step moved into the trash, partly removed.
  half_deleted = tmp_path / TRASH_SUBDIR / "3"
  half_deleted.mkdir(parents=True)
  (half_deleted / "leftover").write_bytes(b"")
  reopened = Checkpointer(str(tmp_path), max_to_keep=2)
  assert reopened.all_steps() == [5]
  assert not (tmp_path / TRASH_SUBDIR).exists()
  reopened.close()
