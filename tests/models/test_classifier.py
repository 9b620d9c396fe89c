"""IResNetClassifier and its unconstrained twin."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import iresflow
from iresflow.models import IResNetClassifier

SMALL = dict(num_classes=4, stages=(2, 2), hidden=(8, 8), injective_padding=3)


def test_logits_shape_jit_and_grad():
  model = IResNetClassifier(**SMALL)
  x = jax.random.normal(jax.random.key(0), (6, 8, 8, 1))
  variables = model.init(jax.random.key(1), x)
  logits = jax.jit(model.apply)(variables, x)
  assert logits.shape == (6, 4)
  labels = jnp.arange(6) % 4

  def loss(params):
    logits = model.apply({"params": params, "spectral": variables["spectral"]}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  grads = jax.jit(jax.grad(loss))(variables["params"])
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  assert iresflow.certify(model, variables).certified


def test_per_example_logits_do_not_depend_on_the_batch():
  model = IResNetClassifier(**SMALL)
  x = jax.random.normal(jax.random.key(0), (5, 8, 8, 1))
  variables = model.init(jax.random.key(1), x)
  np.testing.assert_allclose(model.apply(variables, x)[2:3], model.apply(variables, x[2:3]), atol=1e-5)


def test_unconstrained_twin_has_the_same_parameters_and_no_spectral_state():
  x = jnp.ones((2, 8, 8, 1))
  constrained = IResNetClassifier(**SMALL).init(jax.random.key(0), x)
  twin = IResNetClassifier(**SMALL, coeff=None).init(jax.random.key(0), x)
  assert "spectral" not in twin
  assert jax.tree.map(jnp.shape, twin["params"]) == jax.tree.map(jnp.shape, constrained["params"])
  with pytest.raises(ValueError, match="no Lipschitz constraint"):
    iresflow.certify(IResNetClassifier(**SMALL, coeff=None), twin)


@pytest.mark.parametrize("kwargs,x_shape,match", [
    (dict(coeff=1.0), (2, 8, 8, 1), "coeff"),
    (dict(coeff=-0.2), (2, 8, 8, 1), "coeff"),
    (dict(), (2, 8, 8), "x: expected images"),
    (dict(), (2, 7, 7, 1), "divisible"),
    (dict(hidden=(8,)), (2, 8, 8, 1), "hidden"),
    (dict(activation="gelu"), (2, 8, 8, 1), "activation"),
    (dict(num_classes=0), (2, 8, 8, 1), "num_classes"),
])
def test_bad_configuration_fails_at_init(kwargs, x_shape, match):
  with pytest.raises(ValueError, match=match):
    IResNetClassifier(**{**SMALL, **kwargs}).init(jax.random.key(0), jnp.ones(x_shape))
