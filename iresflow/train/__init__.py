"""Training: configs, tasks, train state, pure steps, sharding, Orbax checkpoints, train_and_evaluate.

Needs the ``train`` extra (``pip install 'iresflow[train]'``: orbax, ml_collections, tqdm, and the
``data`` extra's libraries); figures need ``matplotlib`` (``iresflow[plot]``), imported only when one
is drawn. The names below are loaded on first use, so ``import iresflow.train.state`` loads optax and
Flax's struct only, not orbax, tqdm or matplotlib.
"""

import importlib

_EXPORTS = {
    "build_model": "builders", "make_estimator": "builders", "make_solver": "builders", "residual_spec": "builders",
    "ConfigError": "config", "default_config": "config", "load_config": "config",
    "Training": "setup", "TrainingData": "setup", "setup_training": "setup",
    "TrainState": "state", "create_optimizer": "state",
    "TrainingDivergedError": "trainer", "metrics_on_test_set": "trainer", "train_and_evaluate": "trainer",
    "evaluation_variables": "workdir", "load_variables": "workdir",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
  if name in _EXPORTS:
    return getattr(importlib.import_module(f"iresflow.train.{_EXPORTS[name]}"), name)
  raise AttributeError(f"module 'iresflow.train' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + __all__)
