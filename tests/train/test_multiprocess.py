"""The README's multi-host command, run as users type it: ``experiments/train.py`` as two processes on
loopback (``--coordinator_address --num_processes --process_id``; jax.distributed on CPU with gloo).

It must train and evaluate exactly like the single-process command: same losses, same final
parameters, same sharded evaluation (test bits/dim, certificate, inverse), and only process 0 writes
files: a ``sitecustomize`` module on the subprocesses' path makes any write into the workdir by another
process an error (outside ``checkpoints/``, which Orbax coordinates across processes), without
touching the command itself.
"""

import json
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from iresflow.train.checkpoint import Checkpointer
from tests import helpers

ROOT = pathlib.Path(__file__).resolve().parents[2]
# The README's command (experiments/configs/digits_flow.py), shrunk only by its own config flags.
COMMAND = [sys.executable, "experiments/train.py", "--config", "experiments/configs/digits_flow.py",
           "--config.num_steps=4", "--config.model.stages=(1, 1)", "--config.model.residual.hidden=8",
           "--config.batch_size=16", "--config.log_every=2", "--config.checkpoint_every=2", "--config.warmup_steps=0",
           "--config.eval_batch_size=32", "--config.num_eval_examples=48", "--config.num_samples=4",
           "--config.eval_refresh_iterations=1", "--config.estimator.n_terms=3"]

GUARD = '''
import builtins, os, sys
root = os.environ.get("IRESFLOW_TEST_GUARD_WORKDIR")
if root and "--process_id=0" not in sys.argv:
  root = os.path.abspath(root)
  real_open = builtins.open
  def guarded(file, mode="r", *args, **kwargs):
    path = os.path.abspath(os.fspath(file)) if isinstance(file, (str, bytes, os.PathLike)) else ""
    if (path.startswith(root + os.sep) and not path.startswith(os.path.join(root, "checkpoints") + os.sep)
        and any(flag in mode for flag in "wax+")):
      raise AssertionError(f"a process other than 0 wrote {path}")
    return real_open(file, mode, *args, **kwargs)
  builtins.open = guarded
'''


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _train_losses(workdir):
  with open(workdir / "metrics.jsonl") as f:
    return [r["loss"] for r in map(json.loads, f) if r["split"] == "train"]


def _printed_results(stdout: str) -> dict:
  """The results JSON that experiments/train.py prints last."""
  stdout = "\n" + stdout
  return json.loads(stdout[stdout.rindex("\n{") + 1:])


def test_the_readme_multi_host_command_runs_like_one_process(tmp_path):
  guard = tmp_path / "guard"
  guard.mkdir()
  (guard / "sitecustomize.py").write_text(GUARD)
  single, double = tmp_path / "single", tmp_path / "double"
  env = helpers.subprocess_env(ROOT)
  env["PYTHONPATH"] = f"{guard}:{env['PYTHONPATH']}"
  env["IRESFLOW_TEST_GUARD_WORKDIR"] = str(double)
  port = _free_port()
  # The single-process reference and the two processes run at the same time (they share nothing).
  commands = [COMMAND + ["--workdir", str(single)]]
  commands += [COMMAND + ["--workdir", str(double), f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                          f"--process_id={i}"] for i in range(2)]
  processes = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for command in commands]
  outputs = []
  for process in processes:
    stdout, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr[-3000:]
    outputs.append(_printed_results(stdout))

  reference, first, second = outputs
  assert first == second  # every process gets the whole evaluation
  assert first["test_bits_per_dim"] == pytest.approx(reference["test_bits_per_dim"], rel=1e-5)
  assert first["max_lipschitz_bound"] == pytest.approx(reference["max_lipschitz_bound"], rel=1e-5)
  assert first["certified"] and first["inverse_not_converged"] == 0 and first["samples_not_converged"] == 0
  assert json.loads((double / "results.json").read_text()) == first  # written once, by process 0
  np.testing.assert_allclose(_train_losses(double), _train_losses(single), rtol=1e-5)

  states = []
  for workdir in (single, double):
    checkpointer = Checkpointer(str(workdir / "checkpoints"))
    states.append(checkpointer.restore_raw())
    checkpointer.close()
  import jax
  pairs = list(zip(jax.tree.leaves(states[0]["params"]), jax.tree.leaves(states[1]["params"])))
  assert len(pairs) > 5
  for a, b in pairs:
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5, rtol=1e-4)
