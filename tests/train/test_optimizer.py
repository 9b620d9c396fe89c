"""create_optimizer: decoupled weight decay for Adam/Adamax (AdamW), L2 for SGD, schedules, bad input."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from iresflow.train import create_optimizer

PARAMS = {"w": jnp.asarray([1.0, -2.0, 0.5])}


def _first_update(optimizer, grads):
  updates, _ = optimizer.update(grads, optimizer.init(PARAMS), PARAMS)
  return np.asarray(updates["w"])


@pytest.mark.parametrize("name", ["adam", "adamax"])
def test_adam_weight_decay_is_decoupled(name):
  lr, wd = 0.1, 0.01
  optimizer = create_optimizer(name, lr, num_steps=10, weight_decay=wd)
  # Zero gradient: AdamW shrinks each weight by lr * wd * w; coupled L2 would instead feed wd * w
  # through Adam's normalisation and move every weight by about lr.
  np.testing.assert_allclose(_first_update(optimizer, {"w": jnp.zeros(3)}), -lr * wd * PARAMS["w"], rtol=1e-6)
  # A gradient: the Adam step plus the same decoupled decay, independent of the gradient's scale.
  grads = {"w": jnp.asarray([3.0, -1e-3, 40.0])}
  plain = _first_update(create_optimizer(name, lr, num_steps=10), grads)
  np.testing.assert_allclose(_first_update(optimizer, grads), plain - lr * wd * PARAMS["w"], rtol=1e-5)


def test_sgd_weight_decay_is_l2_on_the_gradient():
  lr, wd = 0.1, 5e-4
  optimizer = create_optimizer("sgd", lr, num_steps=10, weight_decay=wd, momentum=0.0)
  grads = {"w": jnp.asarray([0.3, 0.1, -0.2])}
  expected = -lr * (grads["w"] + wd * PARAMS["w"])
  np.testing.assert_allclose(_first_update(optimizer, grads), expected, rtol=1e-6)


def test_clipping_and_warmup():
  optimizer = create_optimizer("sgd", 1.0, num_steps=10, warmup_steps=4, grad_clip=1.0, momentum=0.0)
  state = optimizer.init(PARAMS)
  grads = {"w": jnp.asarray([30.0, 40.0, 0.0])}  # norm 50, clipped to 1
  steps = []
  for _ in range(5):
    updates, state = optimizer.update(grads, state, PARAMS)
    steps.append(float(optax.tree.norm(updates)))
  np.testing.assert_allclose(steps, [0.0, 0.25, 0.5, 0.75, 1.0], atol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="lion"), "optimizer"), (dict(schedule="step"), "schedule"), (dict(learning_rate=0.0), "learning_rate"),
    (dict(weight_decay=-1e-4), "weight_decay"),
])
def test_bad_settings_are_named(kwargs, match):
  settings = dict(name="adam", learning_rate=1e-3, num_steps=10) | kwargs
  with pytest.raises(ValueError, match=match):
    create_optimizer(settings.pop("name"), settings.pop("learning_rate"), **settings)


def test_final_decay_holds_the_rate_then_takes_it_linearly_to_zero():
  # 12 steps, warm-up 2, the last quarter (steps 9..11) decaying: SGD with a unit gradient shows each step's rate.
  optimizer = create_optimizer("sgd", 1.0, num_steps=12, warmup_steps=2, schedule="final_decay", grad_clip=1.0,
                               momentum=0.0)
  state = optimizer.init(PARAMS)
  grads = {"w": jnp.asarray([0.6, 0.8, 0.0])}
  rates = []
  for _ in range(13):
    updates, state = optimizer.update(grads, state, PARAMS)
    rates.append(float(optax.tree.norm(updates)))
  np.testing.assert_allclose(rates, [0.0, 0.5, 1, 1, 1, 1, 1, 1, 1, 1, 2 / 3, 1 / 3, 0.0], atol=1e-6)
