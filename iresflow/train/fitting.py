"""A small optax training loop for several models side by side on in-memory data (Figure 2, Table 4).

``train_and_evaluate`` is for configs, checkpoints and TFDS data; the experiment scripts that compare
small models (the i-ResNet against a Glow-style baseline) need only this. :func:`fit_for_seconds`
gives each model the same wall-clock budget instead of the same number of steps.
The loss is checked on the host every ``check_every`` steps, not every step, so the steps run back
to back; a non-finite loss stops training with an error naming the step. Each step is the trainer's
(``iresflow.train.steps.make_train_step``), as in ``iresflow.fit``. Given a ``desc``, both
show a progress bar with the latest loss and the time left.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from iresflow.train.state import TrainState
from iresflow.train.steps import make_train_step


@dataclasses.dataclass(frozen=True)
class _LossTask:
  """``loss_fn`` as a task of the trainer's step (``iresflow.train.steps.make_train_step``).

  The step's ``spectral`` slot carries every collection other than ``params`` (spectral state,
  ActNorm), replaced by what ``loss_fn`` returns for them.
  """

  loss_fn: Callable

  def loss(self, params, rest, batch, key):
    loss, updated = self.loss_fn({"params": params, **rest}, batch, key)
    return loss, ({**rest, **updated}, {})


def _training_steps(variables: dict, loss_fn: Callable, optimizer: optax.GradientTransformation,
                    batch_at: Callable[[int], np.ndarray], key: jax.Array, check_every: int,
                    n_steps: int | None = None):
  """Runs optimizer steps (``n_steps`` of them, or without end) with the trainer's step; after every
  ``check_every`` steps and at the last one, synchronised with the device and the losses checked, yields
  ``(steps done, variables, last loss)``."""
  rest = {k: v for k, v in variables.items() if k != "params"}
  state = TrainState.create({"params": variables["params"], "spectral": rest}, optimizer)
  step = jax.jit(make_train_step(_LossTask(loss_fn), optimizer, 0.0, key))

  losses, i = [], 0
  while n_steps is None or i < n_steps:
    state, metrics = step(state, jnp.asarray(batch_at(i)))  # step i draws jax.random.fold_in(key, i)
    losses.append(metrics["loss"])
    i += 1
    if len(losses) == check_every or i == n_steps:
      values = np.asarray(jnp.stack(losses))
      if not np.all(np.isfinite(values)):
        first = i - len(values) + int(np.argmin(np.isfinite(values)))
        raise FloatingPointError(f"training diverged: loss {values[first - (i - len(values))]} at step {first}")
      losses = []
      yield i, {"params": state.params, **state.spectral}, float(values[-1])


def fit(variables: dict, loss_fn: Callable, optimizer: optax.GradientTransformation,
        batch_at: Callable[[int], np.ndarray], n_steps: int, key: jax.Array, check_every: int = 100, *,
        desc: str | None = None) -> dict:
  """Minimises ``loss_fn`` over ``variables['params']`` for ``n_steps`` optimizer steps.

  Args:
    variables: Flax variables; collections other than ``params`` (spectral state, ActNorm) are
      carried along and replaced by what ``loss_fn`` returns for them.
    loss_fn: ``(variables, batch, key) -> (scalar loss, updated non-param collections)``.
    optimizer: an optax transformation.
    batch_at: ``step -> batch`` (a host array).
    n_steps: number of steps.
    key: PRNG key; step ``i`` gets ``fold_in(key, i)``.
    check_every: steps between host-side checks that every loss so far is finite.
    desc: shown with a progress bar (steps, loss, time left); None: no bar.

  Returns:
    The trained variables.

  Raises:
    FloatingPointError: a loss was NaN or infinite; names the first such step.
  """
  bar = tqdm(total=n_steps, desc=desc, disable=desc is None, dynamic_ncols=True, mininterval=1.0)
  for done, variables, loss in _training_steps(variables, loss_fn, optimizer, batch_at, key, check_every, n_steps):
    bar.update(done - bar.n)
    bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
  bar.close()
  return variables


def fit_for_seconds(variables: dict, loss_fn: Callable, optimizer: optax.GradientTransformation,
                    batch_at: Callable[[int], np.ndarray], seconds: float, key: jax.Array, check_every: int = 25,
                    *, desc: str | None = None) -> tuple[dict, int, float]:
  """Like :func:`fit`, but for a wall-clock budget: steps until ``seconds`` of training have passed.

  The first ``check_every`` steps (which include compilation) do not count against the budget, so
  models that compile slowly are compared on training time alone; the budget is checked every
  ``check_every`` steps, so it can be overrun by that many steps. ``desc``: a progress bar over the
  budget's seconds (with steps done and the loss).

  Returns:
    ``(trained variables, steps done, seconds of the first check_every steps)``.
  """
  start = time.perf_counter()
  warmup_seconds, budget_start = None, None
  done = 0
  bar = tqdm(total=round(seconds), desc=desc, unit="s", disable=desc is None, dynamic_ncols=True, mininterval=1.0)
  for done, variables, loss in _training_steps(variables, loss_fn, optimizer, batch_at, key, check_every):
    now = time.perf_counter()
    bar.set_postfix(steps=done, loss=f"{loss:.4f}", refresh=False)
    if warmup_seconds is None:
      warmup_seconds, budget_start = now - start, now
      continue
    bar.update(min(round(now - budget_start), bar.total) - bar.n)
    if now - budget_start >= seconds:
      break
  bar.close()
  return variables, done, warmup_seconds
