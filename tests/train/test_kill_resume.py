"""A training run killed with SIGKILL mid-run resumes from its workdir and ends like an uninterrupted run.

The comparison is exact: two processes with the same seed and config give bit-identical metrics on
CPU, with or without the kill (determinism).
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

from iresflow.train.checkpoint import Checkpointer

ROOT = pathlib.Path(__file__).resolve().parents[2]
ARGS = ["--config", str(ROOT / "experiments" / "configs" / "digits_flow.py"), "--config.num_steps=24",
        "--config.checkpoint_every=4", "--config.log_every=4", "--config.model.residual.hidden=8",
        "--config.model.stages=(1, 1)", "--config.batch_size=16", "--config.num_eval_examples=32",
        "--config.eval_batch_size=32", "--config.num_samples=4", "--config.eval_refresh_iterations=1",
        "--config.progress=False"]


def _command(workdir):
  return [sys.executable, str(ROOT / "experiments" / "train.py"), *ARGS, f"--workdir={workdir}"]


def _train_losses(workdir):
  with open(workdir / "metrics.jsonl") as f:
    return {r["step"]: r["loss"] for r in map(json.loads, f) if r["split"] == "train"}


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  subprocess.run(_command(straight), env=env, check=True, capture_output=True, timeout=900)

  process = subprocess.Popen(_command(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 600
  while not (killed / "checkpoints" / "8").exists():  # Orbax renames a finished checkpoint into place
    assert process.poll() is None, "the run ended before it could be killed"
    assert time.time() < deadline
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert not (killed / "results.json").exists()

  # Every checkpoint the killed run left is complete and readable.
  checkpointer = Checkpointer(str(killed / "checkpoints"))
  latest = checkpointer.latest_step()
  assert latest is not None and 8 <= latest < 24
  for step in checkpointer.all_steps():
    restored = checkpointer.restore_raw(step)
    assert int(restored["step"]) == step
  checkpointer.close()

  resumed = subprocess.run(_command(killed), env=env, capture_output=True, text=True, timeout=900)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"Resumed from the checkpoint at step {latest}" in resumed.stderr
  with open(straight / "results.json") as f:
    expected = json.load(f)
  with open(killed / "results.json") as f:
    got = json.load(f)
  assert got["test_bits_per_dim"] == expected["test_bits_per_dim"]
  assert got["max_lipschitz_bound"] == expected["max_lipschitz_bound"]
  # Same steps logged (none twice, none lost) with bit-identical losses.
  assert _train_losses(killed) == _train_losses(straight)
