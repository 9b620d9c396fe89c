"""A small optax training loop for several models side by side on in-memory data (Figure 2, Table 4).

``train_and_evaluate`` is for configs, checkpoints and TFDS data; the experiment scripts that compare
small models (the i-ResNet against a Glow-style baseline) need only this.
The loss is checked on the host every ``check_every`` steps, not every step, so the steps run back
to back; a non-finite loss stops training with an error naming the step.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax


def fit(variables: dict, loss_fn: Callable, optimizer: optax.GradientTransformation,
        batch_at: Callable[[int], np.ndarray], n_steps: int, key: jax.Array, check_every: int = 100) -> dict:
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

  Returns:
    The trained variables.

  Raises:
    FloatingPointError: a loss was NaN or infinite; names the first such step.
  """
  params = variables["params"]
  rest = {k: v for k, v in variables.items() if k != "params"}
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, rest, opt_state, batch, key):
    def params_loss(params):
      return loss_fn({"params": params, **rest}, batch, key)
    (loss, updated), grads = jax.value_and_grad(params_loss, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), {**rest, **updated}, opt_state, loss

  losses = []
  for i in range(n_steps):
    params, rest, opt_state, loss = step(params, rest, opt_state, jnp.asarray(batch_at(i)), jax.random.fold_in(key, i))
    losses.append(loss)
    if len(losses) == check_every or i == n_steps - 1:
      values = np.asarray(jnp.stack(losses))
      if not np.all(np.isfinite(values)):
        first = i - len(values) + 1 + int(np.argmin(np.isfinite(values)))
        raise FloatingPointError(f"training diverged: loss {values[first - (i - len(values) + 1)]} at step {first}")
      losses = []
  return {"params": params, **rest}
