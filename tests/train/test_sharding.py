"""Data parallelism: the step on 4 forced CPU devices equals the single-device step."""

import json
import pathlib
import subprocess
import sys
from tests import helpers


ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_sharded_step_equals_single_device_step():
  env = helpers.subprocess_env(ROOT)
  out = subprocess.run([sys.executable, str(ROOT / "tests" / "train" / "sharded_step_check.py")], env=env,
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["param_devices"] == 4  # parameters replicated on every device of the mesh
  # Same maths, different reduction order across devices: float32 rounding only.
  for single, sharded in zip(result["single_losses"], result["sharded_losses"]):
    assert abs(single - sharded) <= 1e-5 * abs(single)
  assert result["param_diff"] < 1e-5
  # Log-likelihoods (nats, ~ -50) under the single-device params with either spectral state.
  assert result["spectral_effect"] < 1e-3
  assert "batch_size: 6 is not divisible by the 4 devices" in result["divisible_error"]
