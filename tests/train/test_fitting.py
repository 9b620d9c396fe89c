"""The experiments' shared training loop: it minimises, carries non-param state, and stops on NaN."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from iresflow.train.fitting import fit, fit_for_seconds


def _quadratic_loss(variables, target, key):
  del key
  loss = jnp.sum((variables["params"]["w"] - target) ** 2)
  return loss, {"counter": {"n": variables["counter"]["n"] + 1}}


def test_fit_minimises_and_carries_the_other_collections():
  variables = {"params": {"w": jnp.zeros(3)}, "counter": {"n": jnp.asarray(0)}}
  target = np.array([1.0, -2.0, 0.5], np.float32)
  trained = fit(variables, _quadratic_loss, optax.sgd(0.1), lambda i: target, 60, jax.random.key(0),
                check_every=7)
  np.testing.assert_allclose(trained["params"]["w"], target, atol=1e-4)
  assert int(trained["counter"]["n"]) == 60


@pytest.mark.parametrize("bad_step, check_every", [(0, 5), (12, 5), (13, 100)])
def test_fit_names_the_first_step_whose_loss_was_not_finite(bad_step, check_every):
  def loss_fn(variables, batch, key):
    return jnp.sum((variables["params"]["w"] - 1.0) ** 2) * batch[0], {}

  batches = lambda i: np.array([np.nan if i >= bad_step else 1.0], np.float32)
  with pytest.raises(FloatingPointError, match=f"at step {bad_step}$"):
    fit({"params": {"w": jnp.zeros(1)}}, loss_fn, optax.sgd(0.1), batches, 20, jax.random.key(0),
        check_every=check_every)


def test_fit_for_seconds_stops_after_the_budget_and_counts_its_steps():
  variables = {"params": {"w": jnp.zeros(3)}, "counter": {"n": jnp.asarray(0)}}
  target = np.array([1.0, -2.0, 0.5], np.float32)
  trained, steps, warmup = fit_for_seconds(variables, _quadratic_loss, optax.sgd(0.1), lambda i: target, 0.2,
                                           jax.random.key(0), check_every=10)
  assert steps >= 20 and steps % 10 == 0 and warmup > 0  # the warm-up stretch, then at least one more
  assert int(trained["counter"]["n"]) == steps
  np.testing.assert_allclose(trained["params"]["w"], target, atol=1e-4)
