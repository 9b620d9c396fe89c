"""certify(): rigorous per-block Lipschitz bounds vs exact Jacobian norms of g at random points."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import iresflow
from iresflow.models import IResNetFlow
from iresflow.nn import PowerSeries, ResidualSpec
from tests import helpers


def _trained(model, x, steps=30, learning_rate=2e-2):
  variables = helpers.jit_init(model, jax.random.key(1), x, estimator=PowerSeries())
  optimizer = optax.adam(learning_rate)
  params, spectral = variables["params"], variables["spectral"]
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, spectral, opt_state, key):
    def loss_fn(params):
      lp, state = model.apply({"params": params, "spectral": spectral}, x, estimator=PowerSeries(n_terms=4),
                              rngs={"logdet": key}, mutable=["spectral"])
      return -lp.mean(), state["spectral"]
    (_, spectral), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), spectral, opt_state

  for i in range(steps):
    params, spectral, opt_state = step(params, spectral, opt_state, jax.random.key(i))
  return {"params": params, "spectral": spectral}


def _max_jacobian_norm(g, points):
  jac = jax.vmap(jax.jacfwd(lambda v: g(v[None])[0]))(points)
  d = int(np.prod(points.shape[1:]))
  return float(np.max(np.linalg.svd(np.asarray(jac, np.float64).reshape(-1, d, d), compute_uv=False)))


@pytest.mark.parametrize("config,shape", [
    (dict(data_shape=(3,), stages=(), fc_blocks=3, fc_residual=ResidualSpec(hidden=16, activation="elu")), (3,)),
    (dict(data_shape=(4, 4, 1), stages=(3,), residual=ResidualSpec(hidden=6, activation="lipswish")), (2, 2, 4)),
    # i-DenseNets' g (dense and convolutional) and Monotone blocks: the same certificate, other formulas.
    (dict(data_shape=(3,), stages=(), fc_blocks=2, fc_residual=ResidualSpec(
        hidden=4, dense_layers=3, activation="clipswish", architecture="densenet")), (3,)),
    (dict(data_shape=(4, 4, 1), stages=(2,), residual=ResidualSpec(
        hidden=2, kernel_sizes=(3, 1), activation="clipswish", architecture="densenet")), (2, 2, 4)),
    (dict(data_shape=(3,), stages=(), fc_blocks=2, block_type="monotone",  # Monotone Flows' DenseNet g with CPila
          fc_residual=ResidualSpec(hidden=4, dense_layers=3, activation="cpila", architecture="densenet")), (3,)),
], ids=["chain-dense", "chain-conv", "densenet-dense", "densenet-conv", "monotone"])
def test_bounds_dominate_exact_jacobian_norms_after_training(config, shape):
  model = IResNetFlow(**config)
  x = jax.random.normal(jax.random.key(0), (32,) + config["data_shape"])
  variables = _trained(model, x)
  certificate = iresflow.certify(model, variables)
  assert certificate.certified, certificate.table()
  points = 3.0 * jax.random.normal(jax.random.key(9), (64,) + shape)  # (2, 2, 4): after the initial squeeze
  views = model.blocks(variables)
  assert len(certificate.blocks) == len(views) == (config.get("fc_blocks") or sum(config["stages"]))
  for view, block in zip(views, certificate.blocks):
    assert view.name == block.name and view.input_shape == shape
    exact = _max_jacobian_norm(view.residual, points)  # g of this block, from the model's own structure
    assert exact <= block.lipschitz_bound, (block.name, exact, block.lipschitz_bound)
    assert block.lipschitz_bound < 1.0
    for layer in block.layers:
      assert layer.estimate <= layer.bound * (1 + 1e-5)


def test_certificate_reports_a_violation():
  model = IResNetFlow(data_shape=(3,), stages=(), fc_blocks=2, fc_residual=ResidualSpec(hidden=8))
  variables = helpers.jit_init(model, jax.random.key(0), jnp.ones((4, 3)) + jnp.arange(3.0), estimator=PowerSeries())
  # Rotate u away from the top singular vector: eq. (2) then under-normalises the kernel.
  bad = jax.tree.map(lambda u: jnp.ones_like(u).at[..., 0].set(-float(u.shape[-1]) + 1), variables["spectral"])
  scaled = jax.tree.map(lambda k: 50.0 * k, variables["params"])
  certificate = iresflow.certify(model, {"params": scaled, "spectral": bad})
  assert not certificate.certified
  assert "NOT certified" in certificate.table()
  as_dict = certificate.to_dict()
  assert as_dict["certified"] is False and len(as_dict["blocks"]) == 2


def test_certify_rejects_variables_without_spectral_state():
  model = IResNetFlow(data_shape=(3,), stages=(), fc_blocks=1)
  variables = model.init(jax.random.key(0), jnp.ones((2, 3)), estimator=PowerSeries())
  with pytest.raises(ValueError, match="spectral"):
    iresflow.certify(model, {"params": variables["params"]})


def test_a_block_that_is_not_certified_says_why():
  from iresflow.certificate import BlockCertificate, LayerBound
  layers = (LayerBound("layer0", 0.98, 0.98, "svd"), LayerBound("layer1", 0.98, 1.11, "svd"))
  unconverged = BlockCertificate("b", layers, 1.0, 1.09, 0.96)
  assert not unconverged.certified and "layer1" in unconverged.diagnosis()
  assert "not converged" in unconverged.diagnosis()
  loose = BlockCertificate("b", (LayerBound("layer0", 0.99, 1.02, "fft"),), 1.0, 1.02, 0.99)
  assert "exact_max_dim" in loose.diagnosis()
  allowed = BlockCertificate("b", (LayerBound("layer0", 0.99, 0.99, "svd"),), 1.06, 1.05, 1.05)
  assert "lower coeff" in allowed.diagnosis()
  assert BlockCertificate("b", (LayerBound("layer0", 0.9, 0.9, "svd"),), 1.0, 0.9, 0.9).diagnosis() == ""
  table = iresflow.Certificate((unconverged,)).table()
  assert "NOT certified" in table and "why:" in table


@pytest.mark.parametrize("config", [
    dict(data_shape=(2,), stages=(), fc_blocks=2, block_type="monotone", fc_residual=ResidualSpec(
        hidden=4, dense_layers=3, architecture="densenet", activation="cpila")),
    dict(data_shape=(3,), stages=(), fc_blocks=2, fc_residual=ResidualSpec(hidden=2, dense_layers=2)),
    dict(data_shape=(8, 8, 1), stages=(1, 1), residual=ResidualSpec(hidden=4, kernel_sizes=(3, 1, 3))),
], ids=["monotone-densenet-2d", "narrow-chain", "image"])
@pytest.mark.parametrize("coeff", [0.9, 0.98])
def test_a_freshly_initialised_model_is_certified(config, coeff):
  # Narrow layers (wide-to-narrow dense kernels) were estimated below their norms at init (issue #32).
  from iresflow.nn import LipschitzConstraint
  import dataclasses
  for key in ("residual", "fc_residual"):
    if key in config:
      config = {**config, key: dataclasses.replace(config[key], constraint=LipschitzConstraint(coeff=coeff))}
  model = IResNetFlow(**config)
  x = jax.random.normal(jax.random.key(0), (4,) + config["data_shape"])
  for seed in range(3):
    variables = helpers.jit_init(model, jax.random.key(seed), x, estimator=PowerSeries())
    certificate = iresflow.certify(model, variables)
    assert certificate.certified, certificate.table()


def test_the_smaller_side_of_a_convolution_decides_whether_its_norm_is_exact():
  """i-DenseNet layers on MNIST: a 3x3 conv from 14x14x22 (4,312 dims) to 14x14x7 (1,372) gets the exact
  norm (the FFT bound is loose for zero padding on a small grid); two large sides get the FFT bound."""
  from iresflow.certificate import _layer_bound
  from iresflow.core import spectral
  from iresflow.nn.spectral import NormalizedWeights

  kernel = np.asarray(jax.random.normal(jax.random.key(0), (3, 3, 22, 7)), np.float64) / 10
  bound, method = _layer_bound(NormalizedWeights(kernel, None, None), (14, 14, 22), 2048)
  assert method == "exact"
  exact = np.linalg.svd(spectral.conv_operator_matrix(kernel, (14, 14)), compute_uv=False)[0]
  np.testing.assert_allclose(bound, exact, rtol=1e-9)
  assert exact <= spectral.conv_norm_bound(kernel, (14, 14), "SAME")
  wide = np.asarray(jax.random.normal(jax.random.key(1), (3, 3, 16, 16)), np.float64) / 10
  assert _layer_bound(NormalizedWeights(wide, None, None), (14, 14, 16), 2048)[1] == "fft"  # 3,136 both sides
