"""IResNetClassifier and its unconstrained twin."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import iresflow
from iresflow.models import IResNetClassifier
from iresflow.nn import LipschitzConstraint, ResidualSpec

SMALL = dict(data_shape=(8, 8, 1), num_classes=4, stages=(2, 2), stage_hidden=(8, 8), injective_padding=3,
             residual=ResidualSpec(activation="elu"))
TWIN = ResidualSpec(activation="elu", constraint=LipschitzConstraint(coeff=None))


def test_logits_shape_jit_and_grad():
  model = IResNetClassifier(**SMALL)
  x = jax.random.normal(jax.random.key(0), (6, 8, 8, 1))
  variables = jax.jit(model.init)(jax.random.key(1), x)
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
  variables = jax.jit(model.init)(jax.random.key(1), x)
  np.testing.assert_allclose(model.apply(variables, x)[2:3], model.apply(variables, x[2:3]), atol=1e-5)


def test_unconstrained_twin_has_the_same_parameters_and_no_spectral_state():
  x = jnp.ones((2, 8, 8, 1))
  constrained = jax.eval_shape(IResNetClassifier(**SMALL).init, jax.random.key(0), x)
  twin = jax.jit(IResNetClassifier(**{**SMALL, "residual": TWIN}).init)(jax.random.key(0), x)
  assert "spectral" not in twin
  assert jax.tree.map(jnp.shape, twin["params"]) == jax.tree.map(jnp.shape, constrained["params"])
  with pytest.raises(ValueError, match="no Lipschitz constraint"):
    iresflow.certify(IResNetClassifier(**{**SMALL, "residual": TWIN}), twin)


def test_injective_padding_appends_zero_channels_inside_the_model():
  """The padded classifier computes exactly the unpadded architecture on zero-padded input channels."""
  x = jax.random.normal(jax.random.key(0), (3, 8, 8, 1))
  padded = IResNetClassifier(**SMALL)
  variables = jax.jit(padded.init)(jax.random.key(1), x)
  first_kernel = variables["params"]["stage_steps_0"]["block"]["g"]["layer0"]["kernel"]
  assert first_kernel.shape[-2] == 1 + SMALL["injective_padding"]  # the blocks see C + padding channels
  plain = IResNetClassifier(**{**SMALL, "data_shape": (8, 8, 4), "injective_padding": 0})
  x_padded = jnp.concatenate([x, jnp.zeros((3, 8, 8, 3))], axis=-1)
  np.testing.assert_allclose(padded.apply(variables, x), plain.apply(variables, x_padded), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kwargs,x_shape,match", [
    (lambda: dict(residual=ResidualSpec(constraint=LipschitzConstraint(coeff=1.0))), (2, 8, 8, 1), "coeff"),
    (lambda: dict(residual=ResidualSpec(constraint=LipschitzConstraint(coeff=-0.2))), (2, 8, 8, 1), "coeff"),
    (lambda: dict(), (2, 8, 8), "x: expected images"),
    (lambda: dict(data_shape=(7, 7, 1)), (2, 7, 7, 1), "divisible"),
    (lambda: dict(stage_hidden=(8,)), (2, 8, 8, 1), "stage_hidden"),
    (lambda: dict(residual=ResidualSpec(activation="gelu")), (2, 8, 8, 1), "activation"),
    (lambda: dict(num_classes=0), (2, 8, 8, 1), "num_classes"),
])
def test_bad_configuration_fails_before_any_work(kwargs, x_shape, match):
  with pytest.raises(ValueError, match=match):
    IResNetClassifier(**{**SMALL, **kwargs()}).init(jax.random.key(0), jnp.ones(x_shape))


def test_inverse_recovers_images_from_features():
  """Invertible up to the head: images -> features -> images, with every block's inverse converged."""
  from iresflow.nn import INVERSE_INFO, FixedPointSolver, inverse_info

  model = IResNetClassifier(**SMALL)
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
  variables = jax.jit(model.init)(jax.random.key(1), x)
  features = model.apply(variables, x, method=model.features)
  assert features.shape == (4,) + model.feature_shape() == (4, 4, 4, 16)  # (8x8x(1+3)) squeezed once
  # The head reads these features: the logits from them equal the model's.
  head = lambda v, f: v.head(jnp.mean(jax.nn.relu(v.head_norm(f)), axis=(1, 2)))  # noqa: E731
  np.testing.assert_allclose(model.apply(variables, features, method=head), model.apply(variables, x), atol=1e-5)
  solver = FixedPointSolver(atol=1e-6, max_iters=200)
  x_back, state = jax.jit(lambda f: model.apply(variables, f, solver=solver, method=model.inverse,
                                                mutable=[INVERSE_INFO]))(features)
  info = inverse_info(state)
  assert x_back.shape == x.shape
  assert bool(jnp.all(info.converged))
  np.testing.assert_allclose(x_back, x, atol=1e-4)
  # A different image's features give a different image: the inverse is not a constant map.
  assert float(jnp.max(jnp.abs(x_back[0] - x[1]))) > 0.1


def test_inverse_rejects_features_of_the_wrong_shape():
  model = IResNetClassifier(**SMALL)
  x = jnp.ones((2, 8, 8, 1))
  variables = jax.jit(model.init)(jax.random.key(1), x)
  with pytest.raises(ValueError, match=r"features: expected features \(batch, 4, 4, 16\)"):
    model.apply(variables, jnp.ones((2, 8, 8, 4)), method=model.inverse)
