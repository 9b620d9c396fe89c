"""Experiment scripts run on tiny settings, so they cannot rot."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_logdet_bias_quick(tmp_path):
  out = subprocess.run([sys.executable, str(ROOT / "experiments" / "logdet_bias.py"), "--quick",
                        "--output-dir", str(tmp_path)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
  assert out.returncode == 0, out.stderr[-2000:]
  assert (tmp_path / "logdet_bias.png").exists() and (tmp_path / "logdet_bias.md").exists()
  assert "| 0.9 |" in out.stdout
