"""The training job: outputs, TFDS (mock) data, resume, NaN stop, bad configuration."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from iresflow.train import TrainingDivergedError, default_config, train_and_evaluate
from iresflow.train.checkpoint import Checkpointer
from tests import helpers


def tiny_density_config(**overrides):
  config = default_config()
  config.dataset = "digits"
  config.model = dict(stages=(1, 1), residual=dict(hidden=8, activation="elu", constraint=dict(coeff=0.9)))
  config.batch_size = 16
  config.num_steps = 6
  config.log_every = 2
  config.checkpoint_every = 3
  config.progress = False
  config.eval_batch_size = 32
  config.num_eval_examples = 32
  config.num_samples = 4
  config.warmup_steps = 2
  config.eval_refresh_iterations = 1
  for key, value in overrides.items():
    config[key] = value
  return config


def _read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def density_run(tmp_path_factory):
  """One tiny density run (6 steps, EMA), shared by the tests that read its workdir (and by the test
  workers: it runs once per session). Tests copy the workdir before they change anything in it."""
  folder = helpers.shared_across_workers(
      tmp_path_factory, "density-run", lambda folder: train_and_evaluate(tiny_density_config(), str(folder / "run")))
  workdir = folder / "run"
  return workdir, json.loads((workdir / "results.json").read_text())


def test_density_run_writes_metrics_results_certificate_and_figures(density_run):
  tmp_path, results = density_run
  for name in ("metrics.jsonl", "results.json", "certificate.json", "samples.png", "reconstructions.png",
               "model.json"):
    assert (tmp_path / name).exists(), name
  assert results["certified"] and results["inverse_not_converged"] == 0
  assert results["reconstruction_max_abs_error"] < 1e-4
  assert "exact log-det" in results["estimator"]
  assert 0 < results["test_bits_per_dim"] < 8
  assert 0 < results["test_bits_per_dim_standard_error"] < results["test_bits_per_dim"] / 4  # 32 test images
  records = _read_jsonl(tmp_path / "metrics.jsonl")
  assert [r["step"] for r in records if r["split"] == "train"] == [2, 4, 6]
  assert all(np.isfinite(r["loss"]) for r in records if r["split"] == "train")


def test_results_are_written_as_strict_json():
  """results.json and the experiments' JSON hold null where a number is not finite (a diverged inverse)."""
  from iresflow.train.workdir import json_ready

  value = {"error": float("nan"), "bound": np.float32(0.5), "steps": np.int64(3), "certified": np.bool_(True),
           "per_example": np.array([1.0, np.inf]), "shape": (7, 7), "name": "resnet"}
  assert json.loads(json.dumps(json_ready(value), allow_nan=False)) == {
      "error": None, "bound": 0.5, "steps": 3, "certified": True, "per_example": [1.0, None], "shape": [7, 7],
      "name": "resnet"}


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
  config = tiny_density_config(num_steps=40, checkpoint_every=1, learning_rate=1e12, grad_clip=None,
                               warmup_steps=0, optimizer="sgd")
  with pytest.raises(TrainingDivergedError, match=r"step \d+: the loss or the gradients are not finite") as info:
    train_and_evaluate(config, str(tmp_path))
  failed_step = int(str(info.value).split(":")[0].split()[-1])
  checkpointer = Checkpointer(str(tmp_path / "checkpoints"))
  assert checkpointer.latest_step() == failed_step  # every step before the bad one was saved
  checkpointer.close()

  # The host reads the device's record only every 7 steps (and before each checkpoint): the error
  # still names the first bad step, and no checkpoint holds a state from after it.
  deferred = tiny_density_config(num_steps=40, checkpoint_every=7, finite_check_every=7, learning_rate=1e12,
                                 grad_clip=None, warmup_steps=0, optimizer="sgd")
  with pytest.raises(TrainingDivergedError, match=rf"step {failed_step}: the loss or the gradients are not finite"):
    train_and_evaluate(deferred, str(tmp_path / "deferred"))
  checkpointer = Checkpointer(str(tmp_path / "deferred" / "checkpoints"))
  for step in checkpointer.all_steps():
    assert step <= failed_step
    restored = checkpointer.restore_raw(step)
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(restored["params"]))
  checkpointer.close()


def test_tfds_mock_data_trains(tmp_path):
  config = tiny_density_config(dataset="mnist", num_steps=2, checkpoint_every=0, logit_alpha=1e-6)
  config.model = dict(stages=(1,), residual=dict(hidden=4, constraint=dict(coeff=0.9)))
  config.eval_estimator = dict(kind="series", n_terms=3, n_probes=1, probe="gaussian")
  with helpers.mock_tfds(num_examples=32):
    results = train_and_evaluate(config, str(tmp_path))
  assert "Theorem 3" in results["estimator"] and results["truncation_bias_bound"] > 0
  assert np.isfinite(results["test_bits_per_dim"])


def test_classifier_and_toy_runs(tmp_path):
  # The ResNet twin (no constraint, hence no certificate); the i-ResNet classifier's runs are the
  # classification scripts' smoke tests (tests/experiments/test_scripts.py).
  config = tiny_density_config(task="classification", augment_padding=1, ema_decay=0.0)
  config.model = dict(stages=(1, 1), injective_padding=1,
                      residual=dict(hidden=8, activation="elu", constraint=dict(coeff=None)))
  results = train_and_evaluate(config, str(tmp_path / "classifier"))
  assert 0.0 <= results["test_accuracy"] <= 1.0
  assert "certified" not in results and not (tmp_path / "classifier" / "certificate.json").exists()

  config = tiny_density_config(dataset="moons", batch_size=64, toy_train_size=256, toy_test_size=64)
  config.model = dict(stages=(), fc_blocks=2, fc_residual=dict(hidden=16, activation="lipswish"))
  results = train_and_evaluate(config, str(tmp_path / "toy"))
  assert np.isfinite(results["test_nll"]) and (tmp_path / "toy" / "density.png").exists()


@pytest.mark.parametrize("overrides,match", [
    (dict(dataset="imagenet"), "config.dataset"),
    (dict(task="regression"), "config.task"),
    (dict(num_steps=0), "config.num_steps"),
    (dict(ema_decay=1.0), "config.ema_decay"),
    (dict(task="classification", dataset="moons"), "config.dataset"),
    (dict(optimizer="lion"), "optimizer"),
])
def test_bad_configuration_is_named(tmp_path, overrides, match):
  with pytest.raises(ValueError, match=match):
    train_and_evaluate(tiny_density_config(**overrides), str(tmp_path))


def test_unwritable_workdir_is_named(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  with pytest.raises(ValueError, match="workdir"):
    train_and_evaluate(tiny_density_config(), str(blocker / "run"))


def test_hybrid_run_reports_bits_per_dim_and_accuracy(tmp_path):
  config = tiny_density_config(task="hybrid", hybrid_weight=2.0)
  config.model = dict(stages=(1, 1), residual=dict(hidden=8, activation="lipswish"))
  config.estimator = dict(kind="roulette", n_probes=1)
  results = train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(results["test_bits_per_dim"]) and 0.0 <= results["test_accuracy"] <= 1.0
  records = [r for r in _read_jsonl(tmp_path / "metrics.jsonl") if r["split"] == "train"]
  assert all("cross_entropy" in r and "bits_per_dim" in r for r in records)
  assert results["certified"]


def test_certify_script_reproduces_the_trainers_certificate_exactly(density_run, tmp_path):
  """certify.py rebuilds the variables the trainer evaluated (EMA parameters with the spectral state
  refreshed for them, not the state tracked for the live parameters) and certifies the same model."""
  import shutil
  import subprocess
  import sys
  import pathlib
  root = pathlib.Path(__file__).resolve().parents[2]
  workdir = tmp_path / "run"
  shutil.copytree(density_run[0], workdir)
  trainers = json.loads((workdir / "certificate.json").read_text())
  (workdir / "certificate.json").unlink()
  out = subprocess.run([sys.executable, str(root / "experiments" / "certify.py"), "--workdir", str(workdir)],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(root)})
  assert out.returncode == 0, out.stderr[-2000:]
  assert "all certified" in out.stdout
  assert json.loads((workdir / "certificate.json").read_text()) == trainers
  bad = subprocess.run([sys.executable, str(root / "experiments" / "certify.py"), "--workdir", str(tmp_path / "x")],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(root)})
  assert bad.returncode != 0 and "model.json" in bad.stderr


def test_load_variables_are_the_evaluated_ones(density_run):
  """The EMA parameters differ from the live ones, and so does the spectral state the trainer evaluated
  from the one tracked in training; load_variables returns what was evaluated."""
  import iresflow
  from iresflow.train import load_variables
  workdir, results = density_run
  model, variables, step = load_variables(str(workdir))
  checkpointer = Checkpointer(str(workdir / "checkpoints"))
  raw = checkpointer.restore_raw(step)
  checkpointer.close()
  assert step == 6
  differs = lambda a, b: any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert differs(raw["ema_params"], raw["params"]) and not differs(variables["params"], raw["ema_params"])
  assert differs(variables["spectral"], raw["spectral"])
  assert iresflow.certify(model, variables).max_lipschitz_bound == results["max_lipschitz_bound"]


@pytest.mark.default_xla
def test_a_resumed_run_ends_where_the_uninterrupted_one_does(tmp_path, capfd):
  """Training from the step-2 checkpoint to step 4 reproduces the run that went straight to step 4."""
  config = tiny_density_config(dataset="moons", batch_size=64, toy_train_size=256, toy_test_size=64, num_steps=4,
                               checkpoint_every=2, ema_decay=0.0)
  config.model = dict(stages=(), fc_blocks=2, fc_residual=dict(hidden=16, activation="lipswish"))
  workdir = tmp_path / "run"
  uninterrupted = train_and_evaluate(config, str(workdir))
  shutil.rmtree(workdir / "checkpoints" / "4")  # as if the run had stopped after its step-2 checkpoint
  resumed = train_and_evaluate(config, str(workdir))
  assert "Resumed from the checkpoint at step 2" in capfd.readouterr().err
  np.testing.assert_allclose(resumed["test_nll"], uninterrupted["test_nll"], rtol=1e-6)


def test_image_grid_tiles_the_images_into_one_figure(tmp_path):
  """Every image lands in the PNG (grey and colour), and an array that is not a batch of images is refused."""
  from matplotlib.image import imread

  from iresflow.train import plots

  plots.image_grid(np.zeros((5, 4, 4, 1)), str(tmp_path / "grey.png"), title="grey", columns=3)
  pixels = imread(tmp_path / "grey.png")[..., :3]
  assert pixels.min() < 0.1 and pixels.max() > 0.9  # the black images, drawn between white gaps
  plots.image_grid(np.random.default_rng(0).uniform(size=(2, 4, 4, 3)), str(tmp_path / "colour.png"))
  assert (tmp_path / "colour.png").stat().st_size > 0
  with pytest.raises(ValueError, match=r"images: expected shape \(N, H, W, 1 or 3\)"):
    plots.image_grid(np.zeros((5, 4, 4)), str(tmp_path / "bad.png"))
