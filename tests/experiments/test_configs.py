"""Every experiment config builds a model that initialises on its dataset's shapes (abstractly, no FLOPs)."""

import importlib.util
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


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_model_initialises_on_its_data_shape(path):
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
  assert variables["params"]
