"""The i-ResNet family: CLipSwish and the Lipschitz DenseNet (i-DenseNets), the Monotone block (Monotone Flows).

Each against exact computation on small problems: Jacobian norms by ``jax.jacfwd`` + SVD, the
block's log-det by ``jax.jacrev`` + ``slogdet`` of the whole map, round trips, and monotonicity.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import iresflow
from iresflow.models import IResNetFlow
from iresflow.nn import (INVERSE_INFO, ContractiveResidual, ExactLogDet, FixedPointSolver, LipschitzConstraint,
                         MonotoneBlock, PowerSeries, ResidualSpec, Roulette, activations, clipswish, cpila,
                         inverse_info, lipswish, pila)

DENSENET = dict(architecture="densenet", activation="clipswish")


def _column_norms(beta):
  """sqrt(a^2 + b^2) on a fine grid of x: the Jacobian norm of x -> [lipswish(x), lipswish(-x)] per entry."""
  x = jnp.linspace(-30.0, 30.0, 600_001)
  a = jax.vmap(jax.grad(lambda z: lipswish(z, beta)))(x)
  b = jax.vmap(jax.grad(lambda z: lipswish(-z, beta)))(x)
  return np.hypot(np.asarray(a, np.float64), np.asarray(b, np.float64))


@pytest.mark.parametrize("beta", [0.3, 1.0, 4.0])
def test_clipswish_constant_is_the_largest_jacobian_norm(beta):
  norms = _column_norms(beta)
  constant = activations.clipswish_lipschitz_constant()
  assert norms.max() <= constant * (1 + 1e-6)
  assert norms.max() >= constant * (1 - 1e-5)  # the grid reaches the maximum: the constant is not loose
  assert constant == pytest.approx(1.004, abs=5e-4)  # the value Perugachi-Diaz et al. (2021) state


def test_clipswish_doubles_the_width_and_is_1_lipschitz():
  x = 3.0 * jax.random.normal(jax.random.key(0), (64, 6))
  assert clipswish(x, 0.7).shape == (64, 12)
  jac = jax.vmap(jax.jacfwd(lambda z: clipswish(z, 0.7)))(x)  # (64, 12, 6)
  norms = np.linalg.svd(np.asarray(jac, np.float64), compute_uv=False)[:, 0]
  assert norms.max() <= 1.0 + 1e-6
  np.testing.assert_allclose(clipswish(x, 0.7)[:, :6] * activations.CLIPSWISH_LIPSCHITZ, lipswish(x, 0.7),
                             rtol=1e-6)


def test_pila_pieces_and_derivatives():
  # Pila (Ahn et al. 2022): x above 0, (k^2 x^3 / 2 - k x^2 + x) e^(kx) below, k = 5; the pieces meet in
  # value, slope and curvature at 0, and jax's derivative is the closed form the constant is built on.
  x = np.linspace(-3.0, 2.0, 5001)
  k = activations.PILA_K
  expected = np.where(x > 0, x, (k**2 * x**3 / 2 - k * x**2 + x) * np.exp(k * x))
  np.testing.assert_allclose(pila(jnp.asarray(x, jnp.float32)), expected, atol=1e-6)
  slope = jax.vmap(jax.grad(pila))(jnp.asarray(x, jnp.float32))
  s = k * np.minimum(x, 0)
  np.testing.assert_allclose(slope, np.where(x > 0, 1.0, (s**3 / 2 + s**2 / 2 - s + 1) * np.exp(s)), atol=2e-6)
  curvature = jax.grad(jax.grad(pila))
  assert float(curvature(-1e-4)) == pytest.approx(0.0, abs=1e-2) and float(curvature(1e-4)) == 0.0
  assert float(jax.grad(pila)(0.0)) == 1.0  # not the 1/2 of a min/max tie
  assert float(jax.grad(pila)(-4.0 / k)) == pytest.approx(-19 * math.exp(-4), rel=1e-5)  # the dip
  assert np.all(np.isfinite(jax.vmap(jax.grad(pila))(jnp.asarray([-1e4, 0.0, 1e4]))))  # no overflow in grads


def test_cpila_constant_is_the_largest_jacobian_norm():
  # Norm of x -> [pila(x - 0.2), pila(-x - 0.2)] per entry, by jax on a fine float32 grid.
  x = jnp.linspace(-12.0, 12.0, 1_200_001)
  a = jax.vmap(jax.grad(lambda z: pila(z - 0.2)))(x)
  b = jax.vmap(jax.grad(lambda z: pila(-z - 0.2)))(x)
  norms = np.hypot(np.asarray(a, np.float64), np.asarray(b, np.float64))
  constant = activations.CPILA_LIPSCHITZ
  assert norms.max() <= constant
  assert norms.max() >= constant * (1 - 1e-4)  # not loose
  # The maximum sits where one half is at Pila's dip and the other linear: sqrt(1 + (19 e^-4)^2); Ahn et al.'s 1.06.
  assert constant == pytest.approx(math.sqrt(1 + 361 * math.exp(-8)), rel=1e-4)
  assert constant < 1.06


def test_cpila_doubles_the_width_and_is_1_lipschitz():
  x = 2.0 * jax.random.normal(jax.random.key(0), (256, 6))
  assert cpila(x).shape == (256, 12)
  jac = jax.vmap(jax.jacfwd(cpila))(x)  # (256, 12, 6)
  norms = np.linalg.svd(np.asarray(jac, np.float64), compute_uv=False)[:, 0]
  assert norms.max() <= 1.0 + 1e-6 and norms.max() > 0.99  # some entries near the dip: the bound is tight
  np.testing.assert_allclose(cpila(x)[:, 6:] * activations.CPILA_LIPSCHITZ, pila(-x - 0.2), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("x_shape,spec", [
    ((3, 5), ResidualSpec(hidden=4, dense_layers=3, **DENSENET)),
    ((2, 4, 4, 3), ResidualSpec(hidden=2, kernel_sizes=(3, 3, 1), **DENSENET)),
    ((3, 5), ResidualSpec(hidden=4, dense_layers=2, activation="clipswish")),  # a chain with CLipSwish
    ((3, 5), ResidualSpec(hidden=4, dense_layers=3, architecture="densenet", activation="cpila")),
])
def test_densenet_widths_and_concatenation_weights(x_shape, spec):
  x = jax.random.normal(jax.random.key(0), x_shape)
  module = ContractiveResidual(spec)
  variables = jax.jit(module.init)(jax.random.key(1), x)
  assert jax.eval_shape(module.apply, variables, x).shape == x_shape
  channels = x_shape[-1]
  kernels = [variables["params"][f"layer{i}"]["kernel"] for i in range(spec.n_layers(x_shape[1:]))]
  if spec.architecture == "densenet":
    # preactivation doubles the input (CLipSwish); each concatenating layer adds 2 * growth channels.
    widths = [2 * channels + 2 * spec.hidden * i for i in range(len(kernels))]
    etas = module.apply(variables, x_shape[1:], method=module.concat_weights)
    assert len(etas) == len(kernels) - 1
    for eta in etas:
      assert float(jnp.sum(eta**2)) == pytest.approx(1.0, rel=1e-6) and bool(jnp.all(eta > 0))
  else:
    widths = [2 * channels] + [2 * spec.hidden] * (len(kernels) - 1)
    assert module.apply(variables, x_shape[1:], method=module.concat_weights) == ()
  assert [k.shape[-2] for k in kernels] == widths
  assert kernels[-1].shape[-1] == channels


def test_densenet_bound_formula_against_exact_jacobian_norms_with_stretched_weights():
  # Layers far from normalised and unequal concatenation weights: the bound must still dominate.
  spec = ResidualSpec(hidden=3, dense_layers=3, constraint=LipschitzConstraint(coeff=None), **DENSENET)
  x = jax.random.normal(jax.random.key(0), (2, 4))
  module = ContractiveResidual(spec)
  variables = jax.jit(module.init)(jax.random.key(1), x)
  params = jax.tree.map(lambda a: a, variables["params"])
  params["concat0"] = jnp.array([2.0, -1.0])
  params["layer1"]["kernel"] = 3.0 * params["layer1"]["kernel"]
  variables = {"params": params}
  layers = module.apply(variables, (4,), method=module.normalized_layers)
  etas = module.apply(variables, (4,), method=module.concat_weights)
  norms = [float(np.linalg.svd(np.asarray(w.kernel, np.float64), compute_uv=False)[0]) for w in layers]
  bound = spec.lipschitz_bound((4,), norms, [np.asarray(e) for e in etas])
  points = 3.0 * jax.random.normal(jax.random.key(2), (256, 4))
  jac = jax.jit(jax.vmap(jax.jacfwd(lambda v: module.apply(variables, v[None])[0])))(points)
  exact = np.linalg.svd(np.asarray(jac, np.float64), compute_uv=False)[:, 0].max()
  assert exact <= bound
  assert bound < np.prod(norms) * (1 + 2 * 3)  # far below the naive bound of a concatenation-blind product


def test_lipschitz_bound_rejects_wrong_counts():
  spec = ResidualSpec(dense_layers=3, **DENSENET)
  with pytest.raises(ValueError, match="layer_norms"):
    spec.lipschitz_bound((4,), [0.5, 0.5])
  with pytest.raises(ValueError, match="concat_weights"):
    spec.lipschitz_bound((4,), [0.5, 0.5, 0.5], [(0.6, 0.8)])
  with pytest.raises(ValueError, match="architecture"):
    ResidualSpec(architecture="wide")


# ------------------------------------------------------------------------------------------ Monotone block


def _monotone(spec=ResidualSpec(hidden=8, dense_layers=2, constraint=LipschitzConstraint(0.9)), shape=(4, 3)):
  block = MonotoneBlock(spec)
  x = 2.0 * jax.random.normal(jax.random.key(0), shape)
  return block, jax.jit(block.init)(jax.random.key(1), x), x


def _whole_map_logdet(block, variables, x):
  jac = jax.jit(jax.vmap(jax.jacrev(lambda z: block.apply(variables, z[None])[0])))(x)
  d = math.prod(x.shape[1:])
  return np.linalg.slogdet(np.asarray(jac, np.float64).reshape(-1, d, d))


@pytest.mark.default_xla
@pytest.mark.parametrize("spec,shape", [
    (ResidualSpec(hidden=8, dense_layers=2, constraint=LipschitzConstraint(0.9)), (4, 3)),
    (ResidualSpec(hidden=3, dense_layers=3, constraint=LipschitzConstraint(0.9), architecture="densenet",
                  activation="cpila"), (4, 3)),  # Monotone Flows' recipe: DenseNet g with CPila
    (ResidualSpec(hidden=2, kernel_sizes=(3, 1), constraint=LipschitzConstraint(0.9)), (2, 2, 2, 2)),
])
def test_monotone_block_log_det_round_trip_and_definition(spec, shape):
  block, variables, x = _monotone(spec, shape)
  y, value = jax.jit(lambda x: block.apply(variables, x, estimator=ExactLogDet(), method=block.forward_and_log_det))(x)
  sign, exact = _whole_map_logdet(block, variables, x)
  assert np.all(sign > 0)
  np.testing.assert_allclose(value, exact, rtol=1e-4, atol=2e-5)
  # The definition: y = 2u - x with u + g(u) = x.
  g = lambda z: block.apply(variables, z, method=block.residual)
  u = (x + y) / 2
  np.testing.assert_allclose(u + g(u), x, atol=2e-5)
  x_back, inverse_value = jax.jit(lambda y: block.apply(variables, y, estimator=ExactLogDet(),
                                                        method=block.inverse_and_log_det))(y)
  np.testing.assert_allclose(x_back, x, atol=5e-5)
  np.testing.assert_allclose(inverse_value, -value, rtol=1e-4, atol=2e-5)


def test_monotone_block_is_monotone_and_bi_lipschitz():
  block, variables, _ = _monotone()
  a = 2.0 * jax.random.normal(jax.random.key(5), (512, 3))
  b = a + 0.5 * jax.random.normal(jax.random.key(6), (512, 3))
  fa, fb = jax.jit(block.apply)(variables, a), jax.jit(block.apply)(variables, b)
  assert float(jnp.min(jnp.sum((fa - fb) * (a - b), axis=1))) >= -1e-5
  ratio = jnp.linalg.norm(fa - fb, axis=1) / jnp.linalg.norm(a - b, axis=1)
  lipschitz = 0.9 ** 2 + 1e-3  # two layers at c = 0.9 (estimates converged at init)
  assert float(ratio.max()) <= (1 + lipschitz) / (1 - lipschitz)
  assert float(ratio.min()) >= (1 - lipschitz) / (1 + lipschitz)


@pytest.mark.parametrize("estimator", [PowerSeries(n_terms=25, n_probes=4000, probe="rademacher", unroll=False),
                                       Roulette(n_probes=4000, probe="rademacher")])
def test_monotone_block_estimators_match_the_exact_log_det(estimator):
  block, variables, x = _monotone()
  _, exact = jax.jit(lambda x: block.apply(variables, x, estimator=ExactLogDet(),
                                            method=block.forward_and_log_det))(x)
  _, value = jax.jit(lambda x: block.apply(variables, x, estimator=estimator, method=block.forward_and_log_det,
                                           rngs={"logdet": jax.random.key(3)}))(x)
  # 4000 probes on a 3x3 Jacobian: the spread of one probe is below 1, so 5 standard errors < 0.08.
  np.testing.assert_allclose(value, exact, atol=0.08)


def test_monotone_block_unconverged_forward_solve_gives_nan():
  spec = ResidualSpec(hidden=8, dense_layers=2, constraint=LipschitzConstraint(0.9))
  block = MonotoneBlock(spec, forward_solver=FixedPointSolver(max_iters=1))
  x = 2.0 * jax.random.normal(jax.random.key(0), (4, 3))
  variables = jax.jit(block.init)(jax.random.key(1), x)
  (y, value), state = jax.jit(lambda x: block.apply(variables, x, estimator=ExactLogDet(),
                                                    method=block.forward_and_log_det, mutable=[INVERSE_INFO]))(x)
  converged = np.asarray(inverse_info(state).converged)
  assert not converged.all()
  assert np.all(np.isnan(np.asarray(y))[~converged]) and np.all(np.isnan(np.asarray(value))[~converged])


def test_monotone_flow_log_prob_gradients_samples_and_certificate():
  spec = ResidualSpec(hidden=8, dense_layers=2, constraint=LipschitzConstraint(0.9))
  flow = IResNetFlow(data_shape=(2,), stages=(), fc_blocks=2, fc_residual=spec, block_type="monotone")
  x = jax.random.normal(jax.random.key(0), (6, 2))
  variables = jax.jit(lambda key, x: flow.init(key, x, estimator=ExactLogDet()))(jax.random.key(1), x)
  log_prob = jax.jit(lambda x: flow.apply(variables, x, estimator=ExactLogDet()))(x)
  forward = jax.jit(lambda x: flow.apply(variables, x, method=flow.forward))
  z = forward(x)
  jac = jax.jit(jax.vmap(jax.jacrev(lambda v: flow.apply(variables, v[None], method=flow.forward)[0])))(x)
  expected = -0.5 * jnp.sum(z**2, 1) - math.log(2 * math.pi) + np.linalg.slogdet(np.asarray(jac, np.float64))[1]
  np.testing.assert_allclose(log_prob, expected, rtol=1e-4, atol=1e-4)
  # Gradients through both solves (implicit) and the series are finite, and training moves the log-prob.
  grads = jax.jit(jax.grad(lambda p: -jnp.mean(flow.apply({**variables, "params": p}, x, estimator=PowerSeries(
      n_terms=4, gradient="neumann"), rngs={"logdet": jax.random.key(2)}))))(variables["params"])
  assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(grads))
  samples, state = jax.jit(lambda key: flow.apply(variables, 3, rngs={"sample": key}, method=flow.sample,
                                                  mutable=[INVERSE_INFO]))(jax.random.key(4))
  assert bool(jnp.all(inverse_info(state).converged)) and samples.shape == (3, 2)
  back = jax.jit(lambda z: flow.apply(variables, z, method=flow.inverse))(z)
  np.testing.assert_allclose(back, x, atol=1e-4)
  certificate = iresflow.certify(flow, variables)
  assert certificate.certified and len(certificate.blocks) == 2
  assert all(type(view.block) is MonotoneBlock for view in flow.blocks(variables))


def test_flow_rejects_unknown_block_type():
  flow = IResNetFlow(data_shape=(2,), stages=(), fc_blocks=1, block_type="coupling")
  with pytest.raises(ValueError, match="block_type"):
    flow.init(jax.random.key(0), jnp.zeros((2, 2)), estimator=ExactLogDet())


def test_a_registered_activation_trains_and_certifies():
  # One public call makes an activation usable in a model and in its certificate (issue #28).
  def half_softsign(x):  # Lipschitz constant 1/2 (softsign is 1-Lipschitz)
    return 0.5 * jax.nn.soft_sign(x)

  record = activations.register_activation("test_half_softsign", half_softsign, lipschitz=0.5, overwrite=True)
  assert activations.get_activation("test_half_softsign") is record
  spec = ResidualSpec(hidden=8, dense_layers=2, activation="test_half_softsign", preactivation=True)
  flow = IResNetFlow(data_shape=(3,), stages=(), fc_blocks=2, fc_residual=spec)
  x = jax.random.normal(jax.random.key(0), (16, 3))
  variables = flow.init(jax.random.key(1), x, estimator=ExactLogDet())
  log_prob, grads = jax.value_and_grad(lambda p: flow.apply({**variables, "params": p}, x,
                                                              estimator=ExactLogDet()).mean())(variables["params"])
  assert np.isfinite(float(log_prob)) and all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  certificate = iresflow.certify(flow, variables)
  # Two activations per block (pre-activation + between the layers), each 1/2: the bound is a quarter of
  # the product of the layers' norms.
  for block in certificate.blocks:
    assert block.activation_lipschitz == pytest.approx(0.25)
    assert block.lipschitz_bound == pytest.approx(0.25 * math.prod(layer.bound for layer in block.layers))
  assert certificate.certified
  # The bound is an upper bound of the exact Jacobian norms of g.
  for view in flow.blocks(variables):
    jac = jax.vmap(jax.jacfwd(lambda v: view.residual(v[None])[0]))(x)
    largest = np.linalg.svd(np.asarray(jac, np.float64), compute_uv=False).max()
    assert largest <= 1.000001 * view_bound(certificate, view)


def view_bound(certificate, view):
  return next(block.lipschitz_bound for block in certificate.blocks if block.name == view.name)


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="", function=jax.nn.elu, lipschitz=1.0), "name"),
    (dict(name="elu", function=jax.nn.elu, lipschitz=1.0), "already registered"),
    (dict(name="x1", function="elu", lipschitz=1.0), "function"),
    (dict(name="x2", function=jax.nn.elu, lipschitz=0.0), "lipschitz"),
    (dict(name="x3", function=jax.nn.elu, lipschitz=float("inf")), "lipschitz"),
    (dict(name="x4", function=jax.nn.elu, lipschitz=1.0, width_factor=0), "width_factor"),
    (dict(name="x5", function=jax.nn.elu, lipschitz=1.0, width_factor=2), "shape"),  # does not double the width
    (dict(name="x6", function=lambda x: x[..., 0], lipschitz=1.0), "shape"),
    (dict(name="x7", function=jnp.tanh, lipschitz=1.0, learnable=True), "beta"),  # takes no beta
])
def test_register_activation_rejects_bad_records_before_any_model_is_built(kwargs, match):
  with pytest.raises((ValueError, TypeError), match=match):
    activations.register_activation(**kwargs)
  assert kwargs["name"] in ("", "elu") or kwargs["name"] not in activations.ACTIVATIONS
  with pytest.raises(ValueError, match="activation: expected one of"):
    ResidualSpec(activation="no_such_activation")


def test_densenet_flow_on_grayscale_images_at_full_resolution():
  """One channel, no squeeze (the i-DenseNet MNIST configs): g's last layer, a 1x1 convolution to one channel,
  has one repeated singular value, where the Lanczos norm estimate broke down to nan at init."""
  x = jax.random.normal(jax.random.key(0), (3, 6, 6, 1))
  residual = ResidualSpec(hidden=3, kernel_sizes=(3, 3, 1), activation="clipswish", architecture="densenet",
                          constraint=LipschitzConstraint(coeff=0.98))
  model = IResNetFlow(data_shape=(6, 6, 1), stages=(1,), residual=residual, initial_squeeze=False)
  variables = model.init({"params": jax.random.key(0), "logdet": jax.random.key(1)}, x, estimator=ExactLogDet())
  assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(variables))
  log_prob, _ = model.apply(variables, x, estimator=ExactLogDet(), mutable=["spectral"])
  assert bool(jnp.all(jnp.isfinite(log_prob)))
  assert iresflow.certify(model, variables).certified
