"""Benchmark scripts run in their quick mode, so they cannot rot (no timing is asserted)."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script,expected", [
    ("compile_time.py", ["| blocks | compile (s) |", "| 4 |"]),
    ("memory.py", ["| neumann |", "| backprop |"]),
])
def test_benchmark_quick_mode(script, expected):
  out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick"],
                       capture_output=True, text=True, timeout=600, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
  assert out.returncode == 0, out.stderr[-2000:]
  for text in expected:
    assert text in out.stdout
