"""What a training run leaves in its workdir, and how to load a trained model back from it.

``WORKDIR/model.json`` says how to rebuild the model (task, data shape, classes, ``config.model``,
whether evaluation uses the EMA parameters, how many norm-estimator steps refresh the spectral state
before evaluation); ``WORKDIR/checkpoints`` holds the train states. :func:`load_variables` rebuilds the
variables that the trainer evaluated and certified, with :func:`evaluation_variables`, the one
function both use: EMA (or live) parameters, with the spectral state refreshed for exactly those
parameters. (The spectral state in a checkpoint was tracked for the live parameters; pairing it with
the EMA parameters would certify a different model from the one evaluated.)
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from iresflow.models import IResNetFlow
from iresflow.train.builders import build_model

MODEL_SPEC = "model.json"
CHECKPOINTS = "checkpoints"


def write_model_spec(workdir: str, config, data_shape: tuple[int, ...], num_classes: int) -> None:
  """Writes ``WORKDIR/model.json`` (call it on one process only)."""
  spec = {"task": config.task, "data_shape": list(data_shape), "num_classes": num_classes,
          "model": config.model.to_dict(), "ema": config.ema_decay > 0,
          "eval_refresh_iterations": config.eval_refresh_iterations}
  with open(os.path.join(workdir, MODEL_SPEC), "w") as f:
    json.dump(spec, f, indent=2)


def json_ready(value):
  """``value`` for strict JSON (``json.dump(..., allow_nan=False)``): non-finite floats become None
  (``null``; e.g. the error of an inverse that diverged), numpy scalars and arrays Python numbers and
  lists, tuples lists; dicts and lists are converted recursively."""
  if isinstance(value, dict):
    return {key: json_ready(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_ready(item) for item in value]
  if isinstance(value, (np.ndarray, jax.Array)):
    return json_ready(np.asarray(value).tolist())
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  if isinstance(value, (int, np.integer)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    return float(value) if np.isfinite(value) else None
  return value


def read_model_spec(workdir: str) -> dict:
  path = os.path.join(workdir, MODEL_SPEC)
  if not os.path.exists(path):
    raise FileNotFoundError(f"workdir: {path} not found; is {workdir!r} a training workdir?")
  with open(path) as f:
    return json.load(f)


def evaluation_variables(model, params, spectral, refresh_iterations: int) -> dict:
  """The variables to evaluate and certify: ``params`` with the spectral state refreshed for them.

  Runs the norm estimator ``refresh_iterations`` times on ``params`` (the estimator's update does
  not depend on the data, so a zero input of the model's data shape drives it). Deterministic: the
  trainer and :func:`load_variables` get the same arrays.
  """
  variables = {"params": jax.device_get(params)}
  if not spectral:
    return variables
  variables["spectral"] = jax.device_get(spectral)
  x = jnp.zeros((1,) + tuple(model.data_shape), jnp.float32)
  method = model.forward if isinstance(model, IResNetFlow) else None
  refresh = jax.jit(lambda v: model.apply(v, x, method=method, mutable=["spectral"])[1]["spectral"])
  for _ in range(refresh_iterations):
    variables["spectral"] = refresh(variables)
  return jax.device_get(variables)


def load_variables(workdir: str, step: int | None = None) -> tuple[object, dict, int]:
  """``(model, variables, step)``: the evaluated variables of a checkpoint (default: the newest).

  Raises:
    FileNotFoundError: if ``workdir`` has no ``model.json`` or no checkpoint.
  """
  from iresflow.train.checkpoint import Checkpointer  # orbax, only when a checkpoint is read

  spec = read_model_spec(workdir)
  config = ml_collections.ConfigDict({"task": spec["task"], "model": spec["model"]})
  model = build_model(config, tuple(spec["data_shape"]), spec["num_classes"])
  checkpointer = Checkpointer(os.path.join(workdir, CHECKPOINTS))
  try:
    step = checkpointer.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"workdir: no checkpoint in {checkpointer.directory}")
    state = checkpointer.restore_raw(step)
  finally:
    checkpointer.close()
  params = state["ema_params"] if spec["ema"] else state["params"]
  spectral = state.get("spectral") or {}
  variables = evaluation_variables(model, params, spectral, spec.get("eval_refresh_iterations", 10))
  return model, jax.tree.map(np.asarray, variables), step
