"""From configs to objects: every builder rejects unknown keys by name, the trainer's defaults are the
library's dataclasses' (except where chosen on purpose), and a user-defined estimator trains."""

import dataclasses
import json

import jax
import ml_collections
import numpy as np
import pytest

from iresflow.core import estimators, logdet
from iresflow.core.fixed_point import FixedPointSolver
from iresflow.nn import PowerSeries, ResidualSpec, Roulette
from iresflow.train import build_model, default_config, make_estimator, make_solver, residual_spec, train_and_evaluate
from iresflow.train.config import CHOSEN_ON_PURPOSE
from tests.train.test_trainer import tiny_density_config


@pytest.mark.parametrize("build,settings,match", [
    (make_estimator, dict(kind="series", n_term=20), r"estimator: unknown setting\(s\) \['n_term'\] for kind "
                                                     r"'series'; expected some of \[.*'n_terms'"),
    (make_estimator, dict(kind="exact", n_terms=20), r"\['n_terms'\] are not settings of kind 'exact'"),
    (make_estimator, dict(kind="roulette", gradient="backprop"), r"\['gradient'\] are not settings of kind 'roulette'"),
    (make_estimator, dict(kind="stochastic"), r"estimator.kind: expected one of"),
    (make_solver, dict(atol=1e-6, max_iter=10), r"solver: unknown setting\(s\) \['max_iter'\].*'max_iters'"),
    (residual_spec, dict(width=8), r"residual: unknown setting\(s\) \['width'\].*'hidden'"),
    (residual_spec, dict(constraint=dict(coef=0.5)), r"residual.constraint: unknown setting\(s\) \['coef'\].*'coeff'"),
])
def test_every_builder_names_an_unknown_key_and_the_valid_ones(build, settings, match):
  with pytest.raises(ValueError, match=match):
    build(settings)


def test_build_model_names_an_unknown_model_key():
  config = ml_collections.ConfigDict(dict(task="density", model=dict(stages=(1,), stage=(2,))))
  with pytest.raises(ValueError, match=r"model: unknown setting\(s\) \['stage'\] for IResNetFlow; expected .*'stages'"):
    build_model(config, (8, 8, 1), 10)
  config = ml_collections.ConfigDict(dict(task="classification", model=dict(stages=(1,), factor_out=True)))
  with pytest.raises(ValueError, match=r"\['factor_out'\] for IResNetClassifier"):
    build_model(config, (8, 8, 1), 10)


def test_an_unknown_estimator_key_from_the_command_line_is_an_error(tmp_path):
  # The flag typo of issue #28: the trainer's config is locked, so the key cannot even be added.
  config = default_config()
  config.lock()
  with pytest.raises(AttributeError, match="n_term"):
    config.estimator.n_term = 20
  # A config file that adds it reaches the builder, which names it.
  config = tiny_density_config()
  config.estimator.n_term = 20
  with pytest.raises(ValueError, match=r"unknown setting\(s\) \['n_term'\]"):
    train_and_evaluate(config, str(tmp_path))


def test_estimator_kind_and_settings_can_be_switched_by_their_keys():
  config = default_config()
  config.estimator.kind = "roulette"
  config.estimator.max_terms = 40
  assert make_estimator(config.estimator) == Roulette(max_terms=40)
  config.eval_estimator.kind = "series"
  config.eval_estimator.n_terms = 20
  assert make_estimator(config.eval_estimator, "eval_estimator") == PowerSeries(n_terms=20, precision="highest")


def _flatten(tree, prefix=""):
  items = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      items.update(_flatten(value, f"{prefix}{key}."))
    else:
      items[f"{prefix}{key}"] = value
  return items


def test_default_config_has_the_library_defaults_except_where_it_says_why():
  config = default_config()
  assert make_estimator(config.estimator) == PowerSeries()
  assert residual_spec(config.model.residual) == ResidualSpec()
  solver = make_solver(config.solver)
  assert dataclasses.replace(solver, max_iters=FixedPointSolver().max_iters) == FixedPointSolver()
  # Every key that differs from the dataclasses' defaults is listed, with a reason.
  sections = {"solver": (config.solver, FixedPointSolver()), "model.residual": (config.model.residual, ResidualSpec())}
  differing = []
  for section, (values, library) in sections.items():
    values = _flatten(values.to_dict())
    for key, default in _flatten(dataclasses.asdict(library)).items():
      value = tuple(values[key]) if isinstance(values[key], (list, tuple)) else values[key]
      if value != default:
        differing.append(f"{section}.{key}")
  for name in ("estimator", "eval_estimator"):
    chosen = {k: v for k, v in config[name].items() if v is not None and k != "kind"}
    differing += [f"{name}.{key}" for key in chosen]
  assert set(differing) <= set(CHOSEN_ON_PURPOSE), sorted(set(differing) - set(CHOSEN_ON_PURPOSE))
  assert all(len(reason) > 20 for reason in CHOSEN_ON_PURPOSE.values())


@dataclasses.dataclass(frozen=True)
class TwoTermSeries:
  """A user-defined estimator: the series' first two terms, from the core (the protocol, nothing more)."""

  n_probes: int = 1
  needs_key = True
  calls = []  # traced calls, so the test can see it was used

  def __call__(self, key, g, x, *, transform="residual"):
    TwoTermSeries.calls.append(transform)
    return logdet.power_series_logdet(key, g, x, n_terms=2, n_probes=self.n_probes, transform=transform)

  def describe(self):
    return f"two-term series, {self.n_probes} probes (a test's own estimator)"

  def bias_bound(self, lipschitz, dim, *, transform="residual"):
    return None


def test_a_user_defined_estimator_trains_and_evaluates_through_the_trainer(tmp_path):
  estimators.register_estimator("two_terms", TwoTermSeries, overwrite=True)
  assert estimators.ESTIMATORS["two_terms"] is TwoTermSeries
  config = tiny_density_config(num_steps=2, checkpoint_every=0)
  config.estimator = dict(kind="two_terms", n_probes=2)
  config.eval_estimator = dict(kind="two_terms")
  TwoTermSeries.calls.clear()
  results = train_and_evaluate(config, str(tmp_path))
  assert TwoTermSeries.calls  # the trainer called it, in training and evaluation
  assert results["estimator"] == "two-term series, 1 probes (a test's own estimator): its bias is not bounded"
  assert np.isfinite(results["test_bits_per_dim"])
  losses = [r["loss"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
            if r["split"] == "train"]
  assert losses and np.all(np.isfinite(losses))
  with pytest.raises(TypeError, match="lacks"):
    estimators.register_estimator("broken", type("Broken", (), {"needs_key": False}))
  with pytest.raises(TypeError, match="estimator: expected a log-det estimator"):
    estimators.check_estimator(lambda key, g, x: (g(x), jax.numpy.zeros(len(x))))
