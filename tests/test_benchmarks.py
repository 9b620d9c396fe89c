"""Benchmark scripts run in their quick mode, so they cannot rot (no timing is asserted)."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_compile_time_benchmark_quick():
  out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compile_time.py"), "--quick"],
                       capture_output=True, text=True, timeout=600, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
  assert out.returncode == 0, out.stderr[-2000:]
  assert "| blocks | compile (s) |" in out.stdout and "| 4 |" in out.stdout


def test_memory_benchmark_quick():
  out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "memory.py"), "--quick"],
                       capture_output=True, text=True, timeout=600, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
  assert out.returncode == 0, out.stderr[-2000:]
  assert "| neumann |" in out.stdout and "| backprop |" in out.stdout
