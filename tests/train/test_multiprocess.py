"""Two processes on loopback (jax.distributed on CPU) run ``train_and_evaluate`` like one process.

Same training (losses, final parameters), same sharded evaluation (test bits/dim, certificate,
inverse), and only process 0 writes files (multiprocess_check.py makes any other write an error).
"""

import json
import pathlib
import socket
import subprocess
import sys

import numpy as np

from iresflow.train.checkpoint import Checkpointer
from tests import helpers


ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "tests" / "train" / "multiprocess_check.py")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _train_losses(workdir):
  with open(workdir / "metrics.jsonl") as f:
    return [r["loss"] for r in map(json.loads, f) if r["split"] == "train"]


def test_two_processes_run_train_and_evaluate_like_one(tmp_path):
  env = helpers.subprocess_env(ROOT)
  single, double = tmp_path / "single", tmp_path / "double"
  port = str(_free_port())
  # The single-process reference and the two processes run at the same time (they share nothing).
  commands = [[SCRIPT, "0", "1", "0", str(single), str(tmp_path / "single.json")]]
  commands += [[SCRIPT, str(i), "2", port, str(double), str(tmp_path / f"p{i}.json")] for i in range(2)]
  processes = [subprocess.Popen([sys.executable] + command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for command in commands]
  for process in processes:
    _, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr[-3000:]

  reference = json.loads((tmp_path / "single.json").read_text())
  first, second = (json.loads((tmp_path / f"p{i}.json").read_text()) for i in range(2))
  assert reference["devices"] == 1 and first["devices"] == 2 and first["processes"] == 2
  assert first["results"] == second["results"]  # every process gets the whole evaluation
  expected, got = reference["results"], first["results"]
  assert got["test_bits_per_dim"] == pytest_approx(expected["test_bits_per_dim"])
  assert got["max_lipschitz_bound"] == pytest_approx(expected["max_lipschitz_bound"])
  assert got["certified"] and got["inverse_not_converged"] == 0 and got["samples_not_converged"] == 0
  assert json.loads((double / "results.json").read_text()) == got  # written once, by process 0
  np.testing.assert_allclose(_train_losses(double), _train_losses(single), rtol=1e-5)

  states = []
  for workdir in (single, double):
    checkpointer = Checkpointer(str(workdir / "checkpoints"))
    states.append(checkpointer.restore_raw())
    checkpointer.close()
  leaves = [(a, b) for a, b in zip(_leaves(states[0]["params"]), _leaves(states[1]["params"]))]
  assert len(leaves) > 5
  for a, b in leaves:
    np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-4)


def _leaves(tree):
  import jax
  return [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]


def pytest_approx(value):
  import pytest
  return pytest.approx(value, rel=1e-5)
