"""Two processes on loopback (jax.distributed on CPU) train like one process on the whole batch."""

import os
import pathlib
import socket
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "tests" / "train" / "multiprocess_check.py")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path):
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  env.pop("XLA_FLAGS", None)
  single = tmp_path / "single.npz"
  out = subprocess.run([sys.executable, SCRIPT, "0", "1", "0", str(single)], env=env, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  port = str(_free_port())
  double = tmp_path / "double.npz"
  processes = [subprocess.Popen([sys.executable, SCRIPT, str(i), "2", port, str(double)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  for process in processes:
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
  a, b = np.load(single), np.load(double)
  assert int(b["devices"]) == 2 and int(a["devices"]) == 1
  np.testing.assert_allclose(b["losses"], a["losses"], rtol=1e-5)
  params = [k for k in a.files if k.startswith("arr_")]
  assert len(params) > 5
  for key in params:
    np.testing.assert_allclose(b[key], a[key], atol=1e-5, rtol=1e-4)
