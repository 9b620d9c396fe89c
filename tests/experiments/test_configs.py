"""Every experiment config builds a model that initialises on its dataset's shapes (abstractly, no FLOPs)."""

import functools
import importlib.util
import math
import pathlib

import jax
import jax.numpy as jnp
import pytest

from iresflow.models import IResNetClassifier
from iresflow.train import build_model, make_estimator, make_solver
from iresflow.train.setup import check_config

CONFIGS = sorted((pathlib.Path(__file__).resolve().parents[2] / "experiments" / "configs").glob("*.py"))
SHAPES = {"digits": ((8, 8, 1), 10), "mnist_small": ((28, 28, 1), 10), "mnist": ((28, 28, 1), 10),
          "cifar10": ((32, 32, 3), 10)}


@functools.lru_cache(maxsize=None)
def _abstract_variables(path: pathlib.Path):
  """``(config, model, variables)`` of a config file, the variables by ``jax.eval_shape`` (no FLOPs)."""
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  check_config(config)
  data_shape, num_classes = SHAPES.get(config.dataset, ((2,), 0))  # else a 2-D toy density
  model = build_model(config, data_shape, num_classes)
  make_solver(config.solver)
  kwargs = {} if isinstance(model, IResNetClassifier) else {"estimator": make_estimator(config.estimator)}
  make_estimator(config.eval_estimator)
  x = jax.ShapeDtypeStruct((2, *data_shape), jnp.float32)
  variables = jax.eval_shape(lambda key, x: model.init(key, x, **kwargs), jax.random.key(0), x)
  return config, model, variables


def _parameter_count(path: pathlib.Path) -> int:
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(_abstract_variables(path)[2]["params"]))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_model_initialises_on_its_data_shape(path):
  _, _, variables = _abstract_variables(path)
  assert variables["params"]


@pytest.mark.parametrize("dataset", ["digits", "mnist", "cifar10"])
def test_family_configs_compare_at_equal_parameters(dataset):
  # i-DenseNets and Monotone Flows are compared with Residual Flows at an equal parameter budget.
  by_name = {path.stem: path for path in CONFIGS}
  reference = _parameter_count(by_name[f"residual_flow_{dataset}"])
  for member in ("idensenet", "monotone"):
    path = by_name[f"{member}_{dataset}"]
    assert abs(_parameter_count(path) / reference - 1) < 0.1, (path.stem, _parameter_count(path), reference)
    config, model, _ = _abstract_variables(path)
    assert config.model.residual.architecture == "densenet"
    assert model.block_type == ("monotone" if member == "monotone" else "iresnet")
