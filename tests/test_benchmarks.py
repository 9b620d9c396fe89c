"""Benchmark scripts run in their quick mode, so they cannot rot (no timing is asserted)."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np

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


def test_gpu_compiled_memory_quick_mode(tmp_path):
  """The deviceless-compile memory script, with this CPU as the target (the H200 needs the CUDA plugin)."""
  output = tmp_path / "memory.json"
  out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_compiled_memory.py"), "--quick", "--target",
                        "cpu", "--cells", "image", "--output", str(output)], capture_output=True, text=True,
                       timeout=600, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
  assert out.returncode == 0, out.stderr[-2000:]
  image = json.loads(output.read_text())["image"]
  assert set(image) == {"neumann/2", "neumann/2/remat=False", "backprop/20"}
  # remat keeps less than the Neumann step without it, which keeps less than backprop through 20 terms
  assert image["neumann/2"]["temp_bytes"] < image["neumann/2/remat=False"]["temp_bytes"]
  assert image["neumann/2/remat=False"]["temp_bytes"] < image["backprop/20"]["temp_bytes"]
  assert all(cell["convolution_calls"] == 0 for cell in image.values())  # no cuDNN on a CPU


def test_cudnn_workspaces_are_read_from_the_compiled_program():
  sys.path.insert(0, str(ROOT / "benchmarks"))
  from gpu_compiled_memory import convolution_workspaces
  hlo = "\n".join([
      '  %cudnn-conv.3 = (f32[64,14,14,64]{3,2,1,0}, u8[0]{0}) custom-call(%a, %b), window={size=3x3 pad=1_1x1_1}, '
      'dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convForward", metadata={op_name="x"}',
      '  %cudnn-conv-bw-filter.1 = (f32[64,3,3,64]{3,2,1,0}, u8[1048576]{0}) custom-call(%c, %d), '
      'window={size=3x3 pad=1_1x1_1}, custom_call_target="__cudnn$convBackwardFilter"',
      '  %fusion.2 = (f32[8]{0}, u8[4096]{0}) custom-call(%e), custom_call_target="__cublas$gemm"',
      '  %add.1 = f32[64]{0} add(%f, %g)',
  ])
  assert convolution_workspaces(hlo) == [0, 1048576]


def test_flowjax_comparison_quick_mode(tmp_path):
  """benchmarks/vs_flowjax.py --quick (1-second budgets, two tasks): every cell filled, the figure written."""
  pytest.importorskip("flowjax")
  out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "vs_flowjax.py"), "--quick",
                        "--output-dir", str(tmp_path)], capture_output=True, text=True, timeout=900, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads((tmp_path / "vs_flowjax.json").read_text())
  assert set(results) >= {"two_moons", "banana"} and "wine" not in results  # --quick's two tasks
  for task in ("two_moons", "banana"):
    assert set(results[task]) - {"exact"} == {"iresflow i-ResNet", "flowjax MAF"}, task  # no NSF in --quick
  for flow in ("iresflow i-ResNet", "flowjax MAF"):
    assert np.isfinite(results["two_moons"][flow]["test_log_prob"])
    assert results["banana"][flow]["kl"] > -0.05  # KL >= 0 up to its Monte Carlo error
  assert "| two_moons | iresflow i-ResNet |" in out.stdout and "| banana | exact draws |" in out.stdout
  assert (tmp_path / "vs_flowjax_two_moons.png").exists()


def test_kernel_count_multiplies_a_loop_body_by_its_trip_count():
  """vs_flowjax's profile counts kernels per call: a fori_loop's body counts once per iteration."""
  pytest.importorskip("flowjax")
  import importlib.util

  import jax
  import jax.numpy as jnp

  spec = importlib.util.spec_from_file_location("vs_flowjax_for_test", ROOT / "benchmarks" / "vs_flowjax.py")
  module = importlib.util.module_from_spec(spec)
  sys.path.insert(0, str(ROOT / "benchmarks"))  # its sibling import of common.py, as when run as a script
  try:
    spec.loader.exec_module(module)
  finally:
    sys.path.remove(str(ROOT / "benchmarks"))

  def looped(trips):
    body = lambda i, x: jnp.sin(x @ x.T) @ x + jnp.cos(x).sum()
    return jax.jit(lambda x: jax.lax.fori_loop(0, trips, body, x)).lower(jnp.ones((8, 8))).compile()

  counts = {trips: module.kernels_per_call(looped(trips)) for trips in (3, 6, 9)}
  assert counts[6] - counts[3] == counts[9] - counts[6] > 0  # grows linearly with the trip count
  assert (counts[6] - counts[3]) % 3 == 0
