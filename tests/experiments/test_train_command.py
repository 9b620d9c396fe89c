"""`experiments/train.py` as users type it: expected errors print their message alone and exit non-zero."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _train(tmp_path, *flags):
  return subprocess.run([sys.executable, "experiments/train.py", "--config", "experiments/configs/digits_flow.py",
                         "--workdir", str(tmp_path / "workdir"), *flags], cwd=ROOT, capture_output=True, text=True,
                        timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("flags, status, message", [
    (["--config.estimator.n_term=20"], 2, 'Did you mean "n_terms"'),            # a typo in a key
    (["--config.num_steps=abc"], 2, "--config.num_steps=abc"),                  # a value of the wrong type
    (["--config.model.residual.constraint.coeff=1.5"], 2, "residual.constraint: coeff: expected"),  # checked
    (["--config.model.stages=(0, 4)"], 2, "model: stages"),                     # the model's own check
    (["--config.dataset=mnist", "--config.data_dir=EMPTY"], 1, "is not prepared"),  # missing data
    (["--bogus=1"], 2, "Unknown command line flag 'bogus'"),
])
def test_expected_errors_print_the_message_alone(tmp_path, flags, status, message):
  (tmp_path / "empty").mkdir()
  out = _train(tmp_path, *[f.replace("EMPTY", str(tmp_path / "empty")) for f in flags])
  assert out.returncode == status, out.stderr[-2000:]
  assert message in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
  assert not (tmp_path / "workdir" / "checkpoints").exists()  # raised before any work


def test_a_missing_config_file_is_named(tmp_path):
  out = subprocess.run([sys.executable, "experiments/train.py", "--config", "experiments/configs/no_such.py",
                        "--workdir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 2 and "no_such.py" in out.stderr and "Traceback" not in out.stderr
