"""Spectral layers, activations, ActNorm, reshapes and the i-ResNet block."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iresflow.core import logdet as logdet_lib
from iresflow.nn import (INVERSE_INFO, ActNorm, ContractiveResidual, ExactLogDet, FixedPointSolver, IResNetBlock,
                         LipschitzConstraint, PowerSeries, ResidualSpec, Roulette, SpectralConv, SpectralDense, Squeeze,
                         injective_pad, inverse_info, lipswish, squeeze, unsqueeze)
from tests import helpers


def _exact_layer_norm(kernel, input_shape):
  if kernel.ndim == 4:
    return helpers.exact_norm(lambda u: helpers.conv(u[None], kernel)[0], input_shape)
  return float(np.linalg.svd(np.asarray(kernel, np.float64), compute_uv=False)[0])


@pytest.mark.parametrize("layer,x_shape", [
    (SpectralDense(5, constraint=LipschitzConstraint(0.7, n_init_power_iterations=500)), (3, 4)),
    (SpectralConv(3, kernel_size=(3, 3), constraint=LipschitzConstraint(0.7, n_init_power_iterations=500)),
     (2, 5, 5, 2)),
    (SpectralConv(4, kernel_size=(1, 1), constraint=LipschitzConstraint(0.7, n_init_power_iterations=500)),
     (2, 5, 5, 2)),
])
def test_spectral_layer_normalises_to_coeff(layer, x_shape):
  x = jax.random.normal(jax.random.key(0), x_shape)
  variables = layer.init(jax.random.key(1), x)
  raw = variables["params"]["kernel"] * 10.0  # make sure the raw norm is far above coeff
  variables = {"params": {**variables["params"], "kernel": raw}, "spectral": variables["spectral"]}
  _, state = layer.apply(variables, x, mutable=["spectral"])
  for _ in range(3):
    _, state = layer.apply({"params": variables["params"], **state}, x, mutable=["spectral"])
  variables = {"params": variables["params"], **state}
  weights = layer.apply(variables, x_shape[1:], method=layer.normalized_weights)
  assert _exact_layer_norm(weights.kernel, x_shape[1:]) == pytest.approx(0.7, rel=1e-3)
  assert float(weights.norm_estimate) <= _exact_layer_norm(weights.kernel, x_shape[1:]) * (1 + 1e-5)
  y = layer.apply(variables, x)
  assert y.shape == x_shape[:-1] + (layer.features,)


def test_spectral_state_moves_only_when_mutable():
  layer = SpectralConv(3, constraint=LipschitzConstraint(n_init_power_iterations=1))
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 2))
  variables = layer.init(jax.random.key(1), x)
  y_eval = layer.apply(variables, x)  # read-only: no mutation possible, no error either
  y_again = layer.apply(variables, x)
  np.testing.assert_array_equal(y_eval, y_again)
  _, state = layer.apply(variables, x, mutable=["spectral"])
  assert not np.allclose(state["spectral"]["u"], variables["spectral"]["u"])


def test_unconstrained_layer_has_no_spectral_state():
  layer = SpectralDense(3, constraint=LipschitzConstraint(coeff=None))
  variables = layer.init(jax.random.key(0), jnp.ones((2, 4)))
  assert "spectral" not in variables
  kernel = variables["params"]["kernel"]
  np.testing.assert_allclose(layer.apply(variables, jnp.ones((2, 4))), jnp.ones((2, 4)) @ kernel, rtol=1e-6)


def test_conv_layer_applied_at_another_shape_is_an_error():
  layer = SpectralConv(3)
  variables = layer.init(jax.random.key(0), jnp.ones((1, 4, 4, 2)))
  with pytest.raises(ValueError, match="initialised for per-example input shape"):
    layer.apply(variables, jnp.ones((1, 6, 6, 2)))


@pytest.mark.parametrize("coeff", [0.0, 1.0, 1.3, -0.5])
def test_bad_coeff_raises_at_init(coeff):
  with pytest.raises(ValueError, match="coeff"):
    SpectralDense(3, constraint=LipschitzConstraint(coeff=coeff)).init(jax.random.key(0), jnp.ones((1, 2)))


def test_lipswish_is_1_lipschitz_for_any_beta():
  x = jnp.linspace(-20, 20, 20001)
  for beta in (0.0, 0.5, 1.0, 3.0, 30.0):
    slope = jax.vmap(jax.grad(lambda t: lipswish(t, beta)))(x)
    assert float(jnp.max(jnp.abs(slope))) <= 1.0


def _lipswish_formula(x, beta):
  """LipSwish as written, differentiated by JAX."""
  return x * jax.nn.sigmoid(beta * x) / 1.1


def test_lipswish_derivatives_match_automatic_differentiation_to_second_order():
  """The closed-form derivatives (custom JVPs) agree with JAX's derivatives of the formula, first and
  second order, in x and in beta (backprop through the series and the Neumann gradient need both)."""
  x = jnp.concatenate([jnp.linspace(-40, 40, 801), jnp.array([0.0, -1e-6, 1e-6])])
  beta = jnp.float32(0.8)
  np.testing.assert_allclose(lipswish(x, beta), _lipswish_formula(x, beta), rtol=1e-6, atol=1e-7)
  for argnums in (0, 1):
    first = [jax.vmap(jax.grad(f, argnums), (0, None))(x, beta) for f in (lipswish, _lipswish_formula)]
    np.testing.assert_allclose(first[0], first[1], rtol=1e-5, atol=1e-6)
    for second_argnums in (0, 1):
      second = [jax.vmap(jax.grad(jax.grad(f, argnums), second_argnums), (0, None))(x, beta)
                for f in (lipswish, _lipswish_formula)]
      assert np.all(np.isfinite(second[0]))
      np.testing.assert_allclose(second[0], second[1], rtol=1e-5, atol=1e-6)


def test_lipswish_linearisation_keeps_one_array():
  """What the power series reuses for every term: the slope alone (JAX's own derivative of the
  formula keeps three arrays of x's shape)."""
  x = jnp.linspace(-3.0, 3.0, 24).reshape(4, 6)
  for f, expected in ((lipswish, 1), (_lipswish_formula, 3)):
    _, linear = jax.linearize(lambda x: f(x, jnp.float32(0.8)), x)
    kept = [c for c in jax.make_jaxpr(linear)(x).consts if np.shape(c) == x.shape]
    assert len(kept) == expected, f


def test_actnorm_data_dependent_init_and_inverse():
  x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (64, 4, 4, 3))
  norm = ActNorm()
  variables = norm.init(jax.random.key(1), x)
  y, logdet = norm.apply(variables, x, method=norm.forward_and_log_det)
  np.testing.assert_allclose(jnp.mean(y, axis=(0, 1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(jnp.std(y, axis=(0, 1, 2)), 1.0, atol=1e-4)
  np.testing.assert_allclose(norm.apply(variables, y, method=norm.inverse), x, atol=1e-5)
  jac = jax.jacfwd(lambda v: norm.apply(variables, v[None])[0])(x[0]).reshape(48, 48)
  assert float(logdet[0]) == pytest.approx(float(jnp.linalg.slogdet(jac)[1]), abs=1e-4)
  x_back, inverse_logdet = norm.apply(variables, y, method=norm.inverse_and_log_det)
  np.testing.assert_allclose(x_back, x, atol=1e-5)
  np.testing.assert_allclose(inverse_logdet, -logdet, rtol=1e-6)


def test_squeeze_is_an_invertible_permutation():
  x = jax.random.normal(jax.random.key(0), (2, 4, 6, 3))
  y = squeeze(x)
  assert y.shape == (2, 2, 3, 12)
  np.testing.assert_array_equal(unsqueeze(y), x)
  np.testing.assert_array_equal(jnp.sort(y.ravel()), jnp.sort(x.ravel()))
  np.testing.assert_array_equal(y[0, 0, 0, :3], x[0, 0, 0])  # top-left pixel keeps its channels first
  with pytest.raises(ValueError, match="divisible"):
    squeeze(jnp.ones((1, 5, 4, 1)))


def test_squeeze_module_has_the_contract_of_an_invertible_piece():
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
  piece = Squeeze()
  y, logdet = piece.apply({}, x, method=piece.forward_and_log_det)
  np.testing.assert_array_equal(y, squeeze(x))
  x_back, inverse_logdet = piece.apply({}, y, method=piece.inverse_and_log_det)
  np.testing.assert_array_equal(x_back, x)
  assert float(jnp.max(jnp.abs(logdet))) == 0.0 and float(jnp.max(jnp.abs(inverse_logdet))) == 0.0


def test_every_invertible_piece_has_the_contract_and_takes_only_the_settings_it_uses():
  from iresflow.models import IResNetFlow
  from iresflow.nn import FlowStep, Invertible, MonotoneBlock
  for piece in (ActNorm(), Squeeze(), IResNetBlock(ResidualSpec()), MonotoneBlock(ResidualSpec()), FlowStep(),
                IResNetFlow(data_shape=(2,), stages=(), fc_blocks=1)):
    assert isinstance(piece, Invertible), type(piece).__name__
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
  # Exact log-dets and closed-form inverses: no estimator, no solver.
  for piece in (ActNorm(), Squeeze()):
    variables = piece.init(jax.random.key(1), x)
    with pytest.raises(TypeError, match="estimator"):
      piece.apply(variables, x, estimator=PowerSeries(), method=piece.forward_and_log_det)
    with pytest.raises(TypeError, match="solver"):
      piece.apply(variables, x, solver=None, method=piece.inverse)


def test_injective_pad_appends_zero_channels():
  x = jnp.ones((2, 3, 3, 1))
  y = injective_pad(x, 3)
  assert y.shape == (2, 3, 3, 4) and float(jnp.sum(y[..., 1:])) == 0.0


def _block_and_variables(x, **kwargs):
  kwargs.setdefault("preactivation", False)
  block = IResNetBlock(ResidualSpec(**kwargs))
  variables = block.init(jax.random.key(7), x, estimator=PowerSeries(), method=block.forward_and_log_det)
  return block, variables


@pytest.mark.parametrize("shape,kwargs", [
    ((4, 6), dict(hidden=16, dense_layers=3, activation="elu")),
    ((3, 4, 4, 2), dict(hidden=8, activation="lipswish", preactivation=True)),
    ((3, 4, 4, 2), dict(hidden=8, activation="softplus")),
])
def test_block_exact_logdet_round_trip_and_series(shape, kwargs):
  x = 2.0 * jax.random.normal(jax.random.key(0), shape)
  block, variables = _block_and_variables(x, **kwargs)
  y, exact = block.apply(variables, x, estimator=ExactLogDet(), method=block.forward_and_log_det)
  d = math.prod(shape[1:])
  jac = jax.vmap(jax.jacfwd(lambda v: block.apply(variables, v[None])[0]))(x).reshape(shape[0], d, d)
  np.testing.assert_allclose(exact, jnp.linalg.slogdet(jac)[1], atol=2e-5)
  x_back, state = block.apply(variables, y, solver=FixedPointSolver(atol=1e-6, rtol=1e-6), method=block.inverse,
                              mutable=[INVERSE_INFO])
  assert bool(jnp.all(inverse_info(state).converged))
  np.testing.assert_allclose(x_back, x, atol=1e-5)
  # The inverse's log-det is the negative of the forward one at the solution.
  x_again, inverse_logdet = block.apply(variables, y, estimator=ExactLogDet(), method=block.inverse_and_log_det)
  np.testing.assert_allclose(x_again, x_back, atol=1e-6)
  np.testing.assert_allclose(inverse_logdet, -exact, atol=1e-4)
  # Series with many probes: within the Theorem 3 bound + 5 standard errors.
  estimates = jnp.stack([
      block.apply(variables, x, estimator=PowerSeries(n_terms=10, n_probes=500),
                  method=block.forward_and_log_det, rngs={"logdet": jax.random.key(s)})[1] for s in range(4)])
  stderr = jnp.std(estimates, axis=0) / 2.0 + 1e-3
  bound = logdet_lib.series_truncation_bound(0.9 ** block.spec.n_layers(shape[1:]), d, 10)
  np.testing.assert_array_less(jnp.abs(jnp.mean(estimates, 0) - exact), bound + 5 * stderr)


def test_block_residual_is_a_pure_function_of_variables_and_x():
  """``block.apply(variables, x, method=IResNetBlock.residual)`` is ``g``: F(x) - x, jittable, vmappable,
  and its Jacobian by ``jax.jacfwd`` gives the block's exact log-det."""
  x = jax.random.normal(jax.random.key(0), (3, 4, 4, 2))
  block, variables = _block_and_variables(x, hidden=8)
  g = jax.jit(lambda variables, x: block.apply(variables, x, method=IResNetBlock.residual))
  np.testing.assert_allclose(g(variables, x), block.apply(variables, x) - x, atol=1e-6)
  per_example = jax.vmap(lambda v: g(variables, v[None])[0])(x)
  np.testing.assert_allclose(per_example, g(variables, x), atol=1e-6)
  _, exact = block.apply(variables, x, estimator=ExactLogDet(), method=block.forward_and_log_det)
  from iresflow.core import exact_logdet
  _, from_pure = exact_logdet(lambda v: g(variables, v), x)
  np.testing.assert_allclose(from_pure, exact, atol=1e-5)


def test_residual_function_rejects_bad_configuration():
  with pytest.raises(ValueError, match="activation"):
    ResidualSpec(activation="gelu")
  with pytest.raises(ValueError, match="expected \\(batch, H, W, C\\) images or \\(batch, d\\)"):
    ContractiveResidual().init(jax.random.key(0), jnp.ones((1, 3, 3)))
  with pytest.raises(ValueError, match="n_terms"):
    PowerSeries(n_terms=-1)
  with pytest.raises(ValueError, match="max_iters"):
    FixedPointSolver(max_iters=-3)
  with pytest.raises(TypeError, match="estimator"):
    block = IResNetBlock()
    block.init(jax.random.key(0), jnp.ones((1, 3)), estimator="exact", method=block.forward_and_log_det)


@pytest.mark.parametrize("estimator", [
    PowerSeries(n_terms=8, n_probes=64, gradient="neumann"),
    Roulette(n_probes=64, geometric_p=0.5),
])
def test_block_beyond_paper_estimators_and_gradients(estimator):
  x = jax.random.normal(jax.random.key(0), (3, 4, 4, 2))
  block, variables = _block_and_variables(x, hidden=8, activation="lipswish")
  forward = lambda p, key: block.apply({"params": p, "spectral": variables["spectral"]}, x, estimator=estimator,
                                       method=block.forward_and_log_det, rngs={"logdet": key})
  _, exact = block.apply(variables, x, estimator=ExactLogDet(), method=block.forward_and_log_det)
  values = jnp.stack([jax.jit(forward)(variables["params"], jax.random.key(s))[1] for s in range(8)])
  np.testing.assert_allclose(values.mean(0), exact, atol=5 * float(values.std(0).max()) / math.sqrt(8) + 2e-3)
  grads = jax.jit(jax.grad(lambda p, key: jnp.sum(forward(p, key)[1])))(variables["params"], jax.random.key(0))
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_block_inverse_is_differentiable():
  x = jax.random.normal(jax.random.key(0), (2, 6))
  block, variables = _block_and_variables(x, hidden=16, dense_layers=2)
  y = block.apply(variables, x)
  loss = lambda p: jnp.sum(block.apply({"params": p, "spectral": variables["spectral"]}, y,
                                       method=block.inverse) ** 2)
  grads = jax.grad(loss)(variables["params"])
  assert any(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(grads))
