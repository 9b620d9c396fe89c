"""Evaluation over every device and host: batched metrics, reconstructions, samples, 2-D densities.

:func:`map_batches` runs a jitted function over an array in global batches split along the
``'data'`` mesh, as training does: every process feeds its slice of each batch, the last batch is
padded to full size (and the padding dropped), and every process receives all outputs. The density
reports build on it; figures are left to the caller (only one process should write files). Given a
``desc``, each shows a progress bar (batches done, time left) on the first process.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from iresflow.core.estimators import ExactLogDet
from iresflow.core.fixed_point import FixedPointSolver
from iresflow.nn.block import INVERSE_INFO, inverse_info
from iresflow.train import sharding


def map_batches(fn: Callable, variables, arrays: tuple[np.ndarray, ...], batch_size: int, mesh, *,
                desc: str | None = None) -> dict:
  """``fn(variables, *batch, index)`` over ``arrays`` (same length, on every process) in global batches.

  Args:
    fn: a function of the (replicated) variables, one batch of each array and the batch index,
      returning a pytree of arrays with a leading batch axis.
    variables: passed to every call, replicated over the mesh (an argument, not a constant of the program).
    arrays: host arrays, identical on every process.
    batch_size: global batch size, divisible by the mesh's device count.
    mesh: the ``('data',)`` mesh.
    desc: shown with a progress bar over the batches (first process only); None: no bar.

  Returns:
    ``fn``'s outputs for all examples, concatenated, as NumPy arrays.
  """
  sharding.check_batch_size(batch_size, mesh, "eval_batch_size")
  per_process = batch_size // jax.process_count()
  first = jax.process_index() * per_process
  jitted = jax.jit(fn, out_shardings=sharding.replicated(mesh))
  variables = jax.device_put(variables, sharding.replicated(mesh))
  n = len(arrays[0])
  outputs = []
  starts = range(0, n, batch_size)
  bar = tqdm(total=len(starts), desc=desc, unit="batch", disable=desc is None or jax.process_index() != 0,
             dynamic_ncols=True, mininterval=1.0)
  for index, start in enumerate(starts):
    stop = min(start + batch_size, n)
    padded = [np.concatenate([a[start:stop], np.repeat(a[stop - 1:stop], batch_size - (stop - start), axis=0)])
              for a in arrays]
    batch = [sharding.shard_batch(mesh, p[first:first + per_process]) for p in padded]
    out = jitted(variables, *batch, jnp.asarray(index))
    outputs.append(jax.tree.map(lambda o: np.asarray(o)[:stop - start], out))
    bar.update()
  bar.close()
  return jax.tree.map(lambda *o: np.concatenate(o), *outputs)


def reconstruction_report(model, variables: dict, x: np.ndarray, solver: FixedPointSolver, mesh,
                          batch_size: int, *, desc: str | None = None) -> tuple[dict, np.ndarray]:
  """``F^{-1}(F(x))`` for model inputs ``x``: the results entries and the reconstructions."""

  def round_trip(variables, x, index):
    del index
    z = model.apply(variables, x, method=model.forward)
    x_back, state = model.apply(variables, z, solver=solver, method=model.inverse, mutable=[INVERSE_INFO])
    info = inverse_info(state)
    return {"x_back": x_back, "converged": info.converged, "residual": info.residual}

  out = map_batches(round_trip, variables, (x,), batch_size, mesh, desc=desc)
  return {"reconstruction_max_abs_error": float(np.max(np.abs(out["x_back"] - x))),
          "inverse_not_converged": int(np.sum(~out["converged"])),
          "inverse_worst_residual": float(np.max(out["residual"]))}, out["x_back"]


def sample_report(model, variables: dict, n: int, key: jax.Array, solver: FixedPointSolver, mesh,
                  batch_size: int, *, desc: str | None = None) -> tuple[dict, np.ndarray]:
  """``n`` samples ``F^{-1}(z)`` (latents drawn from ``key``, inverted across devices) and their report."""
  z = np.asarray(jax.jit(lambda v: model.apply(v, n, method=model.sample_prior, rngs={"sample": key}))(variables))

  def invert(variables, z, index):
    del index
    x, state = model.apply(variables, z, solver=solver, method=model.inverse, mutable=[INVERSE_INFO])
    info = inverse_info(state)
    return {"x": x, "converged": info.converged, "residual": info.residual}

  out = map_batches(invert, variables, (z,), batch_size, mesh, desc=desc)
  return {"samples_not_converged": int(np.sum(~out["converged"])),
          "samples_worst_residual": float(np.max(out["residual"]))}, out["x"]


def log_density_grid(model, variables: dict, extent: float, size: int, mesh, batch_size: int, *,
                     desc: str | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Exact ``log p`` of a 2-D flow on a ``size x size`` grid over ``[-extent, extent]^2``."""
  axis = np.linspace(-extent, extent, size, dtype=np.float32)
  grid = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
  log_prob = lambda variables, x, index: model.apply(variables, x, estimator=ExactLogDet())
  return grid, map_batches(log_prob, variables, (grid,), batch_size, mesh, desc=desc)
