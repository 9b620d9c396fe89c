"""Experiment scripts run on tiny settings, so they cannot rot."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _checkout_status() -> str | None:
  """``git status`` of the checkout's results and scripts (None outside a git checkout).

  Limited to ``docs/`` and ``experiments/``, where the scripts used to write, so that edits elsewhere
  while the suite runs do not count.
  """
  out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", "docs", "experiments"],
                       cwd=ROOT, capture_output=True, text=True)
  return out.stdout if out.returncode == 0 else None


def _run(script, tmp_path, *args):
  """Runs ``experiments/<script> --quick`` as a user types it, from a fresh working directory.

  Without ``--output-dir``/``--docs-dir`` the results go to ``workdirs/<script>`` under the working
  directory and the checkout is left as it was (``git status`` unchanged); they are then copied into
  ``tmp_path`` for the test to read.
  """
  before = _checkout_status()
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  stdout = _script(script, "--quick", *args, cwd=cwd, timeout=900)
  assert _checkout_status() == before, f"{script} --quick changed the checkout"
  results = cwd / "workdirs" / pathlib.Path(script).stem
  assert results.is_dir(), f"{script} --quick wrote nothing to {results}"
  shutil.copytree(results, tmp_path, dirs_exist_ok=True)
  return stdout


def _script(script, *args, cwd=None, timeout=600):
  """Runs ``experiments/<script> ARGS`` in a fresh process (from ``cwd``); checks it succeeded, returns stdout."""
  out = subprocess.run([sys.executable, str(ROOT / "experiments" / script), *args], cwd=cwd, capture_output=True,
                       text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
  return out.stdout


def test_logdet_bias_quick(tmp_path):
  stdout = _run("logdet_bias.py", tmp_path)
  assert (tmp_path / "logdet_bias.png").exists() and (tmp_path / "logdet_bias.md").exists()
  assert "| 0.9 |" in stdout


def test_dynamics_quick_and_the_i_resnet_never_crosses(tmp_path):
  _run("dynamics.py", tmp_path)
  with open(tmp_path / "dynamics.json") as f:
    results = json.load(f)
  assert results["i-ResNet (c = 0.9)"]["crossings"] == 0  # Lip(g) < 1: each block is increasing on the line
  assert results["ResNet"]["crossings"] > 0  # the unconstrained twin folds the line to fit the noise
  assert (tmp_path / "dynamics.png").exists()


def test_crossings_counts_order_swaps():
  import importlib.util
  spec = importlib.util.spec_from_file_location("dynamics", ROOT / "experiments" / "dynamics.py")
  dynamics = importlib.util.module_from_spec(spec)
  sys.modules["dynamics"] = dynamics  # its Flax module (a dataclass) looks itself up there
  spec.loader.exec_module(dynamics)
  crossings = dynamics.crossings
  assert crossings(np.array([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]])) == 0
  assert crossings(np.array([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])) == 3  # a full reversal swaps every pair
  assert crossings(np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 2.0], [0.0, 1.0, 2.0]])) == 2


def test_inverse_quick(tmp_path):
  stdout = _run("inverse.py", tmp_path)
  with open(tmp_path / "inverse.json") as f:
    results = json.load(f)
  single = results["coeffs"]["0.9"]["single_block"]
  # The a-priori Banach bound holds at every iteration count.
  assert all(e <= b * (1 + 1e-4) + 1e-6 for e, b in zip(single["errors"], single["bounds"]))
  assert results["coeffs"]["0.9"]["trained_certified"]
  assert "| 0.9 |" in stdout and (tmp_path / "inverse.png").exists()


def test_classification_quick(tmp_path):
  # The i-ResNet alone: the ResNet twin's path runs in test_mnist_classification_quick.
  stdout = _run("classification.py", tmp_path, "--coeffs", "0.9", "--seeds", "0")
  assert "| i-ResNet | 0.9 |" in stdout
  assert (tmp_path / "classification_digits.md").exists() and (tmp_path / "classification_digits.png").exists()


def test_toy_densities_quick(tmp_path):
  stdout = _run("toy_densities.py", tmp_path)
  with open(tmp_path / "toy_densities.json") as f:
    results = json.load(f)
  r = results["8gaussians"]
  assert abs(r["glow_params"] - r["iresnet_params"]) / r["iresnet_params"] < 0.1  # matched budgets
  assert np.isfinite(r["iresnet_test_log_likelihood"]) and np.isfinite(r["glow_test_log_likelihood"])
  assert r["iresnet_samples_converged"]
  assert "| 8gaussians |" in stdout and (tmp_path / "toy_densities.png").exists()


def test_digits_density_quick(tmp_path):
  stdout = _run("digits_density.py", tmp_path)
  with open(tmp_path / "digits_density.json") as f:
    results = json.load(f)
  assert abs(results["glow_params"] - results["iresnet_params"]) / results["iresnet_params"] < 0.1
  assert np.isfinite(results["iresnet_test_bits_per_dim"]) and np.isfinite(results["glow_test_bits_per_dim"])
  assert "| Glow-style" in stdout
  assert (tmp_path / "digits_density_iresnet.png").exists() and (tmp_path / "digits_density_glow.png").exists()


def test_self_check_passes():
  stdout = _script("self_check.py")
  assert "all checks passed" in stdout and "[FAIL]" not in stdout


def test_demo_runs_on_tiny_settings(tmp_path):
  stdout = _script("demo.py", "--tiny", "--steps", "3", "--workdir", str(tmp_path / "demo"), "--docs-dir",
                   str(tmp_path / "docs"), timeout=900)
  assert "test bits/dim:" in stdout and "all certified < 1" in stdout
  results = json.loads((tmp_path / "docs" / "results.json").read_text())
  assert results["certified"] and np.isfinite(results["test_bits_per_dim"])
  assert (tmp_path / "docs" / "samples.png").exists() and (tmp_path / "docs" / "certificate.json").exists()


def test_mnist_density_quick(tmp_path):
  """The real-MNIST density protocol on synthetic 28x28 data (normflows is not a test dependency)."""
  # The i-ResNet's recipe alone: the other recipes build in test_mnist_recipes_are_the_search_winners and
  # train in the search's quick test (the same loop).
  stdout = _run("mnist_density.py", tmp_path, "--models", "iresnet")
  results = json.loads((tmp_path / "mnist_density.json").read_text())
  ires = results["models"]["iresnet"]
  assert set(results["models"]) == {"iresnet"} and results["protocol"] == "recipes"
  assert ires["setting"]["stages"] == [1, 1] and ires["setting"]["model"] == "iresnet"
  assert np.isfinite(ires["test_bits_per_dim"]) and ires["test_bits_per_dim_se"] > 0
  assert ires["curve"][0]["step"] == 0 and ires["curve"][-1]["step"] == ires["steps"] == 3
  assert ires["certified"] and ires["samples_converged"] and ires["eval_refresh_iterations"] == 10
  assert ires["certificate"]["certified"] and len(ires["certificate"]["blocks"]) == 2  # per block, for diagnosis
  check = ires["estimator_check"]
  # The roulette estimate is unbiased: its mean error against the exact log-det is within a few s.e.
  error, se = check["eval_roulette_20_exact_minus_exact_bits_per_dim"], check["eval_roulette_20_exact_minus_exact_se"]
  assert abs(error) <= 4 * se + 1e-4
  assert "| i-ResNet (iresflow) | searched: stages=[1, 1], hidden=4" in stdout
  assert " ± " in stdout.split("| i-ResNet (iresflow) |")[1].splitlines()[0].split("|")[-2]  # its estimator check
  # --table-only rewrites the table from the JSON, training nothing.
  written = (tmp_path / "mnist_density.md").read_text()
  (tmp_path / "mnist_density.md").unlink()
  _script("mnist_density.py", "--docs-dir", str(tmp_path), "--table-only", timeout=300)
  assert (tmp_path / "mnist_density.md").read_text() == written
  for name in ("mnist_density_curve.png", "mnist_density_iresnet.png"):
    assert (tmp_path / name).exists()


def _load_experiment(name):
  """An experiments/ script as a module (its folder on the path, as when it runs: scripts import siblings)."""
  import importlib.util
  if str(ROOT / "experiments") not in sys.path:
    sys.path.insert(0, str(ROOT / "experiments"))
  spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module  # dataclasses look their module up there
  spec.loader.exec_module(module)
  return module


def test_mnist_density_keeps_the_one_setting_run(tmp_path):
  """A results folder of the one-setting protocol: its files move to *_one_setting.* and stay in the table."""
  density = _load_experiment("mnist_density")
  old = {"models": {"iresnet": {"name": "i-ResNet (iresflow)", "parameters": 55048, "steps": 2475,
                                "test_bits_per_dim": 1.502, "test_bits_per_dim_se": 0.003, "certified": True,
                                "max_lipschitz_bound": 0.74}}}
  (tmp_path / "mnist_density.json").write_text(json.dumps(old))
  (tmp_path / "mnist_density_iresnet.png").write_bytes(b"png")
  density.keep_one_setting_results(str(tmp_path))
  assert not (tmp_path / "mnist_density.json").exists()
  assert (tmp_path / "mnist_density_one_setting_iresnet.png").read_bytes() == b"png"
  kept = json.loads((tmp_path / "mnist_density_one_setting.json").read_text())
  (tmp_path / "mnist_density.json").write_text(json.dumps({"protocol": "recipes"}))
  density.keep_one_setting_results(str(tmp_path))  # a recipes run is not moved
  assert (tmp_path / "mnist_density.json").exists()
  new = {"n_test": 10000, "dataset": "mnist", "models": {
      "glow": {"name": "Glow-style (coupling width 38)", "parameters": 54528, "steps": 9000, "test_bits_per_dim": 1.2,
               "test_bits_per_dim_se": 0.003, "setting": density.mnist_search.as_json(density.GLOW_RECIPE)}}}
  table = density.results_table(new, kept)
  assert ("| Glow-style (coupling width 38) | searched: learning_rate=0.003, schedule=final_decay | 54,528 | 9,000 | "
          "1.200 ± 0.003 | n/a (coupling) | 0 (exact log-det) |") in table
  assert ("| i-ResNet (iresflow) | one setting (earlier run) | 55,048 | 2,475 | 1.502 ± 0.003 | yes (max Lip(g) "
          "bound 0.7400) | not checked |") in table


def test_mnist_density_table_marks_an_estimator_that_fails_its_check():
  """An estimate more than 3 s.e. from the exact log-det is marked next to the bits/dim it gave."""
  density = _load_experiment("mnist_density")
  name = f"{density.EVAL_CHECK_NAME}_minus_exact"

  def entry(error, se):
    return {"estimator_check": {"n_images": 100, f"{name}_bits_per_dim": error, f"{name}_se": se}}

  assert density.estimator_check_text("idensenet", entry(-0.0794, 0.0073)) == (
      "-0.0794 ± 0.0073 (100 images) **fails: over 3 s.e.**")
  assert density.estimator_check_text("residual_flow", entry(-0.0017, 0.0027)) == "-0.0017 ± 0.0027 (100 images)"
  assert density.estimator_check_text("iresnet", entry(0.0090, 0.0027)).endswith("**fails: over 3 s.e.**")


def test_mnist_density_reruns_some_models_and_keeps_the_others(tmp_path):
  """--models on a folder of an earlier recipes run: the other models' entries stay, if data and budget match."""
  density = _load_experiment("mnist_density")
  earlier = {"protocol": "recipes", "dataset": "mnist", "budget_seconds": 1200.0,
             "models": {"iresnet": {"steps": 2584}, "glow": {"steps": 11000}}}
  (tmp_path / "mnist_density.json").write_text(json.dumps(earlier))
  assert density.earlier_entries(str(tmp_path), "mnist", 1200.0, ["iresnet"]) == {"glow": {"steps": 11000}}
  assert density.earlier_entries(str(tmp_path), "mnist", 600.0, ["iresnet"]) == {}  # another budget
  assert density.earlier_entries(str(tmp_path), "synthetic", 1200.0, ["iresnet"]) == {}  # other data
  assert density.earlier_entries(str(tmp_path / "empty"), "mnist", 1200.0, ["iresnet"]) == {}


def test_mnist_recipes_are_the_search_winners():
  """Each shipped config (and the Glow recipe) is its model's best trial in the committed search results,
  and train.py builds the same flow and estimator from the config as the search does from the setting."""
  from iresflow.train import build_model, make_estimator
  from iresflow.train.config import load_config
  from iresflow.train.setup import check_config

  density = _load_experiment("mnist_density")
  search = density.mnist_search
  results = json.loads((ROOT / "docs" / "mnist_search.json").read_text())
  for model in search.MODELS:
    final = search.best_trials(results["rounds"].get("final", {}), [model], top=1)
    entries = results["rounds"]["final" if final else "first"]
    best = final or search.best_trials(entries, [model], top=1)
    expected = entries[best[0]]["setting"] if best else search.as_json(search.BASES[model])
    assert search.as_json(density.recipe(model)) == expected, model
    if model == "glow":
      continue
    config = load_config(density.recipe_path(model))
    check_config(config)
    flow = build_model(config, (28, 28, 1), 10)
    estimator = make_estimator(config.estimator)
    searched, searched_estimator = search.model_and_estimator(density.recipe(model))
    assert (flow, estimator) == (searched, searched_estimator), model  # the same modules, field by field


def test_mnist_recipe_reader_rejects_what_the_search_never_varied():
  import pytest
  from iresflow.train.config import load_config

  density = _load_experiment("mnist_density")
  config = load_config(density.recipe_path("iresnet"))
  config.ema_decay = 0.999
  with pytest.raises(ValueError, match="config.ema_decay"):
    density.mnist_search.setting_from_config(config, "iresnet")
  config = load_config(density.recipe_path("iresnet"))
  config.estimator.n_probes = 4
  with pytest.raises(ValueError, match="config.estimator.n_probes"):
    density.mnist_search.setting_from_config(config, "iresnet")
  with pytest.raises(ValueError, match="config.model.residual.architecture"):
    density.mnist_search.setting_from_config(load_config(density.recipe_path("idensenet")), "iresnet")


def test_mnist_classification_quick(tmp_path):
  # The i-ResNet alone: the twin's training (coeff=None) runs in test_trainer's classifier run.
  stdout = _run("mnist_classification.py", tmp_path, "--models", "i-ResNet")
  results = json.loads((tmp_path / "mnist_classification.json").read_text())
  assert set(results) == {"i-ResNet"}
  iresnet = results["i-ResNet"]
  assert iresnet["certified"] and 0.0 <= iresnet["test_error"] <= 1.0
  # Invertible up to the head: test images come back from their features.
  assert iresnet["inverse"]["not_converged"] == 0 and iresnet["inverse"]["max_abs_error"] < 1e-4
  assert "| i-ResNet | 0.9 |" in stdout and (tmp_path / "mnist_classification_inverse.png").exists()


def test_precision_policy_quick(tmp_path):
  """Training with bfloat16 g and series, evaluating in float32 at 'highest' (issue #15), on a tiny flow."""
  stdout = _run("precision_policy.py", tmp_path)
  results = json.loads((tmp_path / "precision_policy.json").read_text())
  runs = results["runs"]
  assert set(runs) == {"float32", "bfloat16"}
  assert "g in bfloat16" in runs["bfloat16"][0]["training_estimator"]
  assert "bfloat16" not in runs["float32"][0]["training_estimator"]
  for rows in runs.values():
    assert rows[0]["certified"] and rows[0]["test_estimator"].startswith("exact log-det")
  # Same initialisation, data and probes; three small steps: the two models barely differ yet.
  assert abs(results["summary"]["difference"]["bfloat16_minus_float32"]) < 1e-2
  assert "| bfloat16 |" in stdout


def test_family_quick(tmp_path):
  """The family comparison on one toy, one member: the Monotone Flow (i-DenseNet's g in the Cayley block).

  The Glow-style side and the width matching are what test_toy_densities_quick runs."""
  stdout = _run("family.py", tmp_path, "--datasets", "checkerboard", "--members", "Monotone Flow",
                "--toy-seconds", "1")
  results = json.loads((tmp_path / "family.json").read_text())["checkerboard"]
  monotone = results["Monotone Flow"]
  assert set(results) == {"Monotone Flow"} and monotone["certified"] and monotone["max_lipschitz_bound"] < 1
  assert np.isfinite(monotone["test_log_likelihood"]) and monotone["steps"] > 0
  assert "| Monotone Flow |" in stdout and (tmp_path / "family.png").exists()


def test_conditional_mnist_quick_and_sampling_on_request(tmp_path):
  stdout = _run("conditional_mnist.py", tmp_path)
  with open(tmp_path / "conditional_mnist.json") as f:
    results = json.load(f)
  assert results["certified"] and results["samples_inverse_converged"]
  assert results["dataset"] == "synthetic" and "20 synthetic test images" in stdout
  assert np.isfinite(results["test_bits_per_dim"]) and 0 <= results["generative_classifier_accuracy"] <= 1
  assert (tmp_path / "conditional_mnist_samples.png").exists()
  # Samples of the digits asked for, from the saved variables, in the same working directory.
  cwd = tmp_path / "cwd"
  stdout = _script("conditional_mnist.py", "--quick", "--sample-only", "--digits", "3", "7", cwd=cwd)
  assert (cwd / "workdirs" / "conditional_mnist" / "conditional_mnist_digits_37.png").exists()
  assert "inverse converged: True" in stdout


def _load_mnist_search():
  import importlib.util
  spec = importlib.util.spec_from_file_location("mnist_search", ROOT / "experiments" / "mnist_search.py")
  module = importlib.util.module_from_spec(spec)
  sys.modules["mnist_search"] = module  # its dataclass looks itself up there
  spec.loader.exec_module(module)
  return module


def test_mnist_search_quick_and_a_rerun_resumes(tmp_path):
  """Three tiny trials on synthetic data; a rerun from the same folder finds them done and runs nothing."""
  stdout = _run("mnist_search.py", tmp_path, "--models", "iresnet", "glow")
  with open(tmp_path / "mnist_search.json") as f:
    results = json.load(f)
  first = results["rounds"]["first"]
  assert set(first) == {"iresnet/base", "glow/base", "glow/lr 3e-3"}
  for entry in first.values():
    assert entry["steps"] == 3 and np.isfinite(entry["validation_bits_per_dim"])
  assert first["iresnet/base"]["certified"] and first["glow/lr 3e-3"]["setting"]["learning_rate"] == 3e-3
  assert first["iresnet/base"]["eval_refresh_iterations"] == 10  # validated and certified as the trainer does
  assert results["dataset"] == "synthetic"
  assert "| glow | lr 3e-3 | stages=[1, 1], hidden=4, learning_rate=0.003 |" in stdout
  best = min(("glow/base", "glow/lr 3e-3"), key=lambda n: first[n]["validation_bits_per_dim"])
  assert f"| glow | {best.split('/')[1]} (3 steps) | `first` | 2 of 13 |" in stdout  # the best-per-model table
  stdout = _script("mnist_search.py", "--quick", "--models", "iresnet", "glow", cwd=tmp_path / "cwd", timeout=300)
  assert "3 done, 0 to run" in stdout
  # The final round: the best trial, and the same with the learning rate decayed over the budget's last quarter.
  stdout = _script("mnist_search.py", "--quick", "--round", "final", "--models", "glow", "--top", "1",
                   cwd=tmp_path / "cwd", timeout=300)
  with open(tmp_path / "cwd" / "workdirs" / "mnist_search" / "mnist_search.json") as f:
    results = json.load(f)
  final = results["rounds"]["final"]
  assert set(final) == {best, f"{best}, final decay"}, set(final)
  assert final[f"{best}, final decay"]["setting"]["schedule"] == "final_decay"
  assert results["round_commands"]["final"].endswith("--round final --models glow --top 1")
  assert set(results["rounds"]["first"]) == {"iresnet/base", "glow/base", "glow/lr 3e-3"}  # kept
  # The best-per-model table now takes the Glow-style flow's row from the final round.
  assert "## Round `final` (20 minutes per trial)" in stdout and "`first` | 2 of 13 |" not in stdout


def test_mnist_search_plans_every_trial_and_picks_the_best():
  """Every first-round setting of the four models traces (shapes only); the final round takes the best."""
  import jax
  import jax.numpy as jnp

  search = _load_mnist_search()
  planned = search.trials(search.MODELS, quick=False)
  assert len(planned) == 52 and all(len([n for n in planned if n.startswith(m + "/")]) == 13 for m in search.MODELS)
  x = jnp.zeros((2, 28, 28, 1))
  counts = {}
  for name, setting in planned.items():
    model, estimator = search.model_and_estimator(setting)
    init = (lambda m=model: m.init(jax.random.key(0), x)) if estimator is None else (
        lambda m=model, e=estimator: m.init({"params": jax.random.key(0), "logdet": jax.random.key(0)}, x, estimator=e))
    counts[name] = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(jax.eval_shape(init)["params"]))
  bases = [counts[f"{m}/base"] for m in search.MODELS]
  assert max(bases) / min(bases) < 1.1  # the bases have about the same parameters
  entries = {"iresnet/a": {"validation_bits_per_dim": 1.5}, "iresnet/b": {"validation_bits_per_dim": 1.4},
             "iresnet/c": {"diverged_at_step": 3}, "glow/a": {"validation_bits_per_dim": 1.3},
             # the best, but its refreshed model failed the certificate: not a recipe
             "iresnet/d": {"validation_bits_per_dim": 1.2, "certified": False, "eval_refresh_iterations": 10},
             # uncertified with stale norm estimates (before the refresh): kept
             "iresnet/e": {"validation_bits_per_dim": 1.45, "certified": False}}
  assert search.best_trials(entries, ["iresnet", "glow"], top=1) == ["iresnet/b", "glow/a"]
  assert search.best_trials(entries, ["iresnet"], top=5) == ["iresnet/b", "iresnet/e", "iresnet/a"]
  # The best-per-model table: the final round's best where it has one, against the first round's base.
  trial = {"steps": 10, "validation_se": 0.01}
  results = {"rounds": {"first": {"iresnet/base": {**trial, "validation_bits_per_dim": 1.7},
                                  "iresnet/lr 3e-3": {**trial, "validation_bits_per_dim": 1.5},
                                  "glow/base": {**trial, "validation_bits_per_dim": 1.3}},
                        "final": {"iresnet/lr 3e-3": {**trial, "validation_bits_per_dim": 1.4},
                                  "iresnet/base": {**trial, "validation_bits_per_dim": 1.45}}}}
  lines = search.best_per_model(results)
  assert lines[lines.index(search.BEST_START) + 3:lines.index(search.BEST_END) - 1] == [
      "| iresnet | lr 3e-3 (10 steps) | `final` | 2 of 13 | 1.400 ± 0.010 | 1.700 |",
      "| glow | base (10 steps) | `first` | 1 of 13 | 1.300 ± 0.010 | 1.300 |"]


def test_mnist_search_final_round_adds_a_final_decay_to_each_best_trial():
  search = _load_mnist_search()
  first = search.trials(["idensenet", "glow"], quick=False)
  planned = search.final_round_trials(first, ["idensenet/lr 3e-3", "glow/cosine"])
  assert list(planned) == ["idensenet/lr 3e-3", "idensenet/lr 3e-3, final decay", "glow/cosine"]  # cosine: kept
  assert planned["idensenet/lr 3e-3, final decay"] == search.dataclasses.replace(first["idensenet/lr 3e-3"],
                                                                                schedule="final_decay")
  # Held after the warm-up, then linear to 0 over the budget's last quarter.
  scale = [search.learning_rate_scale(500, elapsed, 100.0, "final_decay") for elapsed in (0, 50, 75, 87.5, 100, 120)]
  np.testing.assert_allclose(scale, [1, 1, 1, 0.5, 0, 0])
  assert np.isclose(search.learning_rate_scale(49, 90.0, 100.0, "final_decay"), 0.5 * 0.4)  # warm-up times decay


def test_mnist_search_step_profile_times_each_change():
  """The step profile (tiny models): CPU time and FLOPs per step; the Glow step does less work."""
  search = _load_mnist_search()
  images = np.random.default_rng(0).integers(0, 256, (64, 28, 28, 1), dtype=np.uint8)
  labels = ["i-ResNet base (5-term series, backprop)", "Glow-style base"]
  rows = search.step_profile(images, repeats=2, quick=True, labels=labels)
  assert list(rows) == labels
  assert all(r["cpu_seconds_per_step"] > 0 for r in rows.values())
  assert rows["Glow-style base"]["flops_per_step"] < rows[labels[0]]["flops_per_step"]
  assert "| Glow-style base |" in search.profile_table(rows)
