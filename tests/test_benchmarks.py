"""Benchmark scripts run in their quick mode, so they cannot rot (no timing is asserted)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script,expected", [
    ("compile_time.py", ["| blocks | compile (s) |", "| 4 |"]),
    ("memory.py", ["| neumann | yes (default) |", "| 4 terms (MiB) |"]),
    ("full_size_step.py", ["digits_flow nn.scan: ", " parameters, trace ", ", compile ", "images/s) on cpu"]),
    ("largest_batch.py --rows iresflow/neumann", ["| iresflow/neumann |", "largest batch in"]),
])
def test_benchmark_quick_mode(script, expected):
  script, *options = script.split()
  out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", *options],
                       capture_output=True, text=True, timeout=600, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
  assert out.returncode == 0, out.stderr[-2000:]
  for text in expected:
    assert text in out.stdout


def test_normflows_comparison_quick_mode(tmp_path):
  """Runs where the optional `bench` extra (PyTorch + normflows) is installed, e.g. after `make bench`."""
  pytest.importorskip("torch")
  pytest.importorskip("normflows")
  out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "vs_normflows.py"), "--quick",
                        "--output-dir", str(tmp_path)], capture_output=True, text=True, timeout=900, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
  assert out.returncode == 0, out.stderr[-3000:]
  for text in ("| toy / neumann |", "| image / neumann |", "| iresflow / neumann, remat=True |",
               "| normflows / neumann |", "## Targets (issues #7 and #15)", "#15: default configuration"):
    assert text in out.stdout
  assert {"vs_normflows.md", "vs_normflows.json", "vs_normflows.png"} <= {p.name for p in tmp_path.iterdir()}


def test_gpu_cells_quick_mode(tmp_path):
  """The GPU run's cells at tiny sizes on the CPU (needs the `bench` extra, like the test above)."""
  pytest.importorskip("torch")
  pytest.importorskip("normflows")
  for section in ("sampling", "train_image", "compile", "fullsize", "precision", "matmul"):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_cells.py"), section, str(tmp_path),
                          "--quick"], capture_output=True, text=True, timeout=900, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / f"{section}.json").read_text())[section]
    assert result, section
  sampling = json.loads((tmp_path / "sampling.json").read_text())["sampling"]
  assert sampling["toy"]["iresflow/highest"]["converged"]
