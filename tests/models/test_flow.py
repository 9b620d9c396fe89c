"""IResNetFlow: exact log-likelihood, round trips before and after training, sampling, certificates."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import iresflow
from iresflow.core import logdet as logdet_lib
from iresflow.models import IResNetFlow
from iresflow.nn import (INVERSE_INFO, ExactLogDet, FixedPointSolver, LipschitzConstraint, PowerSeries, ResidualSpec,
                         inverse_info)
from tests import helpers

IMAGE = dict(data_shape=(8, 8, 1), stages=(2, 2), residual=ResidualSpec(hidden=8), factor_out=True, fc_blocks=1,
             fc_residual=ResidualSpec(hidden=16), prior="learned")
VECTOR = dict(data_shape=(2,), stages=(), fc_blocks=4, fc_residual=ResidualSpec(hidden=32, activation="lipswish"))
TIGHT = FixedPointSolver(atol=1e-7, rtol=1e-7, max_iters=500)
EXACT = ExactLogDet()


def _init(config, batch=6, seed=0):
  model = IResNetFlow(**config)
  x = jax.random.normal(jax.random.key(seed), (batch,) + config["data_shape"])
  return model, helpers.jit_init(model, jax.random.key(seed + 1), x, estimator=PowerSeries()), x


def _inverse(model, variables, z, solver=TIGHT):
  """``(x, merged solver report)`` of the flow's inverse (jitted: one program, where eager application
  dispatches every operation outside the scans separately)."""
  x, state = jax.jit(lambda variables, z: model.apply(variables, z, solver=solver, method=model.inverse,
                                                      mutable=[INVERSE_INFO]))(variables, z)
  return x, inverse_info(state)


def _forward(model, variables, x):
  """``z = F(x)``, jitted."""
  return jax.jit(lambda variables, x: model.apply(variables, x, method=model.forward))(variables, x)


def _train(model, variables, x, steps=50, learning_rate=3e-2):
  """Maximum likelihood with the series estimator and a large learning rate; spectral state updated.

  The learning rate is optimizer state (``inject_hyperparams``), so every call compiles the same step.
  """
  optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate)
  opt_state = optimizer.init(variables["params"])

  @jax.jit
  def step(params, spectral, opt_state, key):
    def loss_fn(params):
      log_prob, state = model.apply({"params": params, "spectral": spectral}, x,
                                    estimator=PowerSeries(n_terms=5), rngs={"logdet": key},
                                    mutable=["spectral"])
      return -jnp.mean(log_prob), state["spectral"]
    (loss, spectral), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), spectral, opt_state, loss

  params, spectral = variables["params"], variables["spectral"]
  losses = []
  for i in range(steps):
    params, spectral, opt_state, loss = step(params, spectral, opt_state, jax.random.key(100 + i))
    losses.append(float(loss))
  return {"params": params, "spectral": spectral}, losses


def _brute_force_log_prob(model, variables, x):
  dim = math.prod(x.shape[1:])
  forward = lambda v: model.apply(variables, v[None], method=model.forward)[0]
  jacobians = jax.jit(jax.vmap(jax.jacfwd(forward)))(x).reshape(x.shape[0], dim, dim)
  sign, logdet = np.linalg.slogdet(np.asarray(jacobians, np.float64))
  assert bool(jnp.all(sign > 0))  # Lemma 6, for the whole composition
  z = jax.jit(jax.vmap(forward))(x)
  return model.apply(variables, z, method=model.prior_log_prob) + logdet


@pytest.mark.default_xla
@pytest.mark.parametrize("config", [IMAGE, VECTOR], ids=["image", "vector"])
def test_exact_log_prob_equals_brute_force_jacobian(config):
  model, variables, x = _init(config)
  exact = jax.jit(lambda x: model.apply(variables, x, estimator=EXACT))(x)
  np.testing.assert_allclose(exact, _brute_force_log_prob(model, variables, x), atol=2e-4, rtol=1e-5)


def test_series_log_prob_within_theorem_3_bound():
  model, variables, x = _init(IMAGE)
  exact = model.apply(variables, x, estimator=EXACT)
  series = jax.jit(lambda key: model.apply(variables, x, estimator=PowerSeries(n_terms=10, n_probes=100),
                                           rngs={"logdet": key}))
  estimates = jnp.stack([series(jax.random.key(s)) for s in range(8)])
  stderr = jnp.std(estimates, axis=0) / math.sqrt(8)
  blocks = sum(IMAGE["stages"]) + IMAGE["fc_blocks"]
  # Each block has Lip(g) <= 0.9^3; its dimension is at most 64; the bias bound adds over blocks.
  bound = blocks * logdet_lib.series_truncation_bound(0.9**3, 64, 10)
  np.testing.assert_array_less(jnp.abs(jnp.mean(estimates, 0) - exact), bound + 5 * stderr + 1e-3)


# The vector flow's round trip also runs under XLA's default settings (make test's second pass); the
# image flow's 25 training steps take a minute there, so it stays in the first pass.
@pytest.mark.parametrize("config", [IMAGE, pytest.param(VECTOR, marks=pytest.mark.default_xla)],
                         ids=["image", "vector"])
def test_round_trip_at_init_and_after_training_with_large_learning_rate(config):
  model, variables, x = _init(config, batch=16)
  z = model.apply(variables, x, method=model.forward)
  x_back, info = _inverse(model, variables, z)
  assert bool(jnp.all(info.converged))
  np.testing.assert_allclose(x_back, x, atol=1e-5)

  trained, losses = _train(model, variables, x, steps=25 if config is IMAGE else 50)
  assert np.all(np.isfinite(losses))
  # Large steps: the parameters moved by about their own size. (The loss is no measure of that: the
  # vector data are drawn from the prior, so its loss starts at its optimum and only fluctuates.)
  moved = optax.tree.norm(jax.tree.map(jnp.subtract, trained["params"], variables["params"]))
  assert moved > 0.5 * optax.tree.norm(variables["params"])
  z = model.apply(trained, x, method=model.forward)
  x_back, info = _inverse(model, trained, z)
  assert bool(jnp.all(info.converged)), info
  np.testing.assert_allclose(x_back, x, atol=1e-5)

  certificate = iresflow.certify(model, trained)
  assert certificate.certified, certificate.table()


def test_power_iteration_tracks_the_exact_norm_during_training():
  # A usual learning rate for Adam. The stored state u of a step belongs to the kernel *before* that
  # step's update; when the top singular values are clustered (seen: 1.087, 1.070, 1.062) one more
  # update can turn the top direction enough to make ||W_new u|| 1-2% low. The estimate a layer uses
  # is computed after its iterations on the current kernel, so we check the state after one
  # update on the final parameters -- what the next step and the trainer's evaluation refresh do.
  model, variables, x = _init(IMAGE, batch=16)
  trained, _ = _train(model, variables, x, steps=100, learning_rate=1e-3)
  _, refreshed = model.apply(trained, x, method=model.forward, mutable=["spectral"])
  trained = {"params": trained["params"], **refreshed}
  params, state = trained["params"], trained["spectral"]
  checked = 0
  for stage in ("stage_steps_0", "stage_steps_1"):
    for layer, kernels in params[stage]["block"]["g"].items():
      if not layer.startswith("layer"):
        continue
      for i in range(kernels["kernel"].shape[0]):
        kernel = kernels["kernel"][i]
        u = state[stage]["block"]["g"][layer]["u"][i]
        op = lambda v: helpers.conv(v[None], kernel)[0]
        estimate = float(jnp.linalg.norm(op(u / jnp.linalg.norm(u))))
        exact = helpers.exact_norm(op, u.shape)
        assert estimate == pytest.approx(exact, rel=0.01), (stage, layer, i)
        assert estimate <= exact * (1 + 1e-5)
        checked += 1
  for layer, kernels in params["fc_step"]["block"]["g"].items():
    if not layer.startswith("layer"):
      continue
    for i in range(kernels["kernel"].shape[0]):
      kernel = kernels["kernel"][i]
      u = state["fc_step"]["block"]["g"][layer]["u"][i]
      estimate = float(jnp.linalg.norm(u @ kernel) / jnp.linalg.norm(u))
      exact = float(np.linalg.svd(np.asarray(kernel, np.float64), compute_uv=False)[0])
      assert estimate == pytest.approx(exact, rel=0.01)
      checked += 1
  assert checked == 2 * 2 * 3 + 3


def test_spectral_state_changes_only_under_mutable():
  model, variables, x = _init(VECTOR)
  lp_1 = model.apply(variables, x, estimator=EXACT)
  lp_2 = model.apply(variables, x, estimator=EXACT)
  np.testing.assert_array_equal(lp_1, lp_2)
  # Start the power iteration from fresh random vectors (at init they may already sit at the fixed point to
  # float32 precision, where one more iteration changes nothing): under mutable=['spectral'] every u moves.
  leaves, treedef = jax.tree.flatten(variables["spectral"])
  keys = jax.random.split(jax.random.key(7), len(leaves))
  fresh = jax.tree.unflatten(treedef, [jax.random.normal(k, u.shape) for k, u in zip(keys, leaves)])
  _, state = model.apply({"params": variables["params"], "spectral": fresh}, x, estimator=EXACT,
                         mutable=["spectral"])
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), fresh, state["spectral"])
  assert all(jax.tree.leaves(changed))
  # Under mutable=['spectral'] the state follows the weights: perturb them and every u moves.
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(5), p.shape), variables["params"])
  _, moved = model.apply({"params": params, "spectral": variables["spectral"]}, x, estimator=EXACT,
                         mutable=["spectral"])
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), variables["spectral"], moved["spectral"])
  assert all(jax.tree.leaves(changed))


@pytest.mark.parametrize("config", [IMAGE, VECTOR], ids=["image", "vector"])
def test_sample_has_data_shape_and_is_finite_under_jit(config):
  model, variables, _ = _init(config)
  sample = jax.jit(lambda v, key: model.apply(v, 5, solver=TIGHT, method=model.sample, rngs={"sample": key},
                                              mutable=[INVERSE_INFO]))
  x, state = sample(variables, jax.random.key(3))
  info = inverse_info(state)
  assert x.shape == (5,) + config["data_shape"]
  assert bool(jnp.all(jnp.isfinite(x))) and bool(jnp.all(info.converged))
  # Samples map back to the latents they came from.
  z = model.apply(variables, 5, method=model.sample_prior, rngs={"sample": jax.random.key(3)})
  z_back = model.apply(variables, x, method=model.forward)
  np.testing.assert_allclose(z_back, z, atol=1e-4)


def test_gradients_of_log_prob_are_finite_and_match_exact_in_expectation():
  model, variables, x = _init(VECTOR)
  loss = lambda p, estimator, key: -jnp.mean(model.apply({"params": p, "spectral": variables["spectral"]}, x,
                                                         estimator=estimator, rngs={"logdet": key}))
  exact = jax.grad(loss)(variables["params"], EXACT, jax.random.key(0))
  series = jax.jit(jax.grad(loss), static_argnums=1)(
      variables["params"], PowerSeries(n_terms=20, n_probes=2000, unroll=False), jax.random.key(1))
  for a, b in zip(jax.tree.leaves(exact), jax.tree.leaves(series)):
    assert bool(jnp.all(jnp.isfinite(b)))
    np.testing.assert_allclose(b, a, atol=0.05, rtol=0.1)


def test_factor_out_and_no_factor_out_both_round_trip():
  for factor_out in (False, True):
    model, variables, x = _init(dict(IMAGE, factor_out=factor_out, fc_blocks=0, prior="normal"))
    z = _forward(model, variables, x)
    assert z.shape == (x.shape[0], 64)
    x_back, _ = _inverse(model, variables, z)
    np.testing.assert_allclose(x_back, x, atol=1e-5)


@pytest.mark.parametrize("config,x_shape,match", [
    (lambda: dict(IMAGE, residual=ResidualSpec(constraint=LipschitzConstraint(coeff=1.0))), (2, 8, 8, 1), "coeff"),
    (lambda: dict(IMAGE, residual=ResidualSpec(constraint=LipschitzConstraint(coeff=0.0))), (2, 8, 8, 1), "coeff"),
    (lambda: dict(IMAGE, residual=ResidualSpec(constraint=LipschitzConstraint(coeff=None))), (2, 8, 8, 1), "coeff"),
    (lambda: dict(IMAGE, data_shape=(6, 6, 1)), (2, 6, 6, 1), "divisible"),
    (lambda: IMAGE, (2, 8, 8), "x: expected shape"),
    (lambda: IMAGE, (2, 8, 8, 3), "x: expected shape"),
    (lambda: dict(VECTOR, stages=(2,)), (2, 2), "stages"),
    (lambda: dict(VECTOR, fc_blocks=0), (2, 2), "no blocks"),
    (lambda: dict(IMAGE, prior="laplace"), (2, 8, 8, 1), "prior"),
    (lambda: dict(IMAGE, residual=ResidualSpec(activation="swish")), (2, 8, 8, 1), "activation"),
    (lambda: dict(IMAGE, stage_hidden=(4, 4, 4)), (2, 8, 8, 1), "stage_hidden"),
])
def test_bad_configuration_fails_before_any_work(config, x_shape, match):
  with pytest.raises(ValueError, match=match):
    IResNetFlow(**config()).init(jax.random.key(0), jnp.ones(x_shape), estimator=EXACT)


def test_integer_input_and_missing_estimator_are_rejected():
  model = IResNetFlow(**VECTOR)
  with pytest.raises(TypeError, match="x"):
    model.init(jax.random.key(0), jnp.ones((2, 2), jnp.int32), estimator=EXACT)
  with pytest.raises(TypeError, match="estimator"):
    model.init(jax.random.key(0), jnp.ones((2, 2)))


def test_unrolled_blocks_and_series_compute_the_same_flow():
  """``unroll_blocks`` / ``PowerSeries(unroll=True)`` change how XLA sees the loops, not the maths:
  same parameters, same log-likelihood, gradients and inverse as the scanned model."""
  config = dict(data_shape=(4, 4, 1), stages=(3,), residual=ResidualSpec(hidden=4), prior="learned")
  scanned, variables, x = _init(config, batch=3)
  unrolled = IResNetFlow(**config, unroll_blocks=True)
  assert (jax.tree.structure(unrolled.init(jax.random.key(1), x, estimator=PowerSeries()))
          == jax.tree.structure(variables))
  key = jax.random.key(5)

  def loss(model, params, unroll):
    estimator = PowerSeries(n_terms=4, unroll=unroll)
    return -jnp.mean(model.apply({**variables, "params": params}, x, estimator=estimator, rngs={"logdet": key}))

  value, grads = jax.value_and_grad(lambda p: loss(scanned, p, False))(variables["params"])
  value_unrolled, grads_unrolled = jax.value_and_grad(lambda p: loss(unrolled, p, True))(variables["params"])
  np.testing.assert_allclose(value_unrolled, value, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(grads_unrolled), jax.tree.leaves(grads)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5)
  z = scanned.apply(variables, x, method=scanned.forward)
  x_back, info = _inverse(unrolled, variables, z)
  assert bool(jnp.all(info.converged))
  np.testing.assert_allclose(x_back, x, atol=1e-5)


def test_bfloat16_inputs_run_forward_log_det_and_inverse():
  """bfloat16 data: activations and latents in bfloat16, parameters float32, log-dets float32."""
  dtype = jnp.bfloat16
  model, variables, x = _init(dict(data_shape=(4, 4, 1), stages=(2,), residual=ResidualSpec(hidden=4), fc_blocks=1,
                                   fc_residual=ResidualSpec(hidden=8)), batch=4)
  x_half = x.astype(dtype)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  forward = jax.jit(lambda x: model.apply(variables, x, estimator=EXACT, method=model.forward_and_log_det))
  z, logdet = forward(x)
  z_half, logdet_half = forward(x_half)
  assert z_half.dtype == dtype and logdet_half.dtype == jnp.float32
  # bfloat16 keeps 8 bits of mantissa: agreement to a few units of its resolution.
  resolution = float(jnp.finfo(dtype).eps)
  np.testing.assert_allclose(np.asarray(z_half, np.float32), z, atol=8 * resolution * float(jnp.max(jnp.abs(z))))
  np.testing.assert_allclose(logdet_half, logdet, rtol=0.02, atol=0.2)
  series = jax.jit(lambda x: model.apply(variables, x, estimator=PowerSeries(n_terms=5, gradient="neumann"),
                                         rngs={"logdet": jax.random.key(0)}))(x_half)
  assert series.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(series)))
  solver = FixedPointSolver(atol=0.0, rtol=4 * resolution, max_iters=100)
  x_back, info = jax.jit(lambda z: _inverse(model, variables, z, solver))(z_half)
  assert x_back.dtype == dtype and info.residual.dtype == jnp.float32
  assert bool(jnp.all(info.converged)), info
  np.testing.assert_allclose(np.asarray(x_back, np.float32), x, atol=32 * resolution * float(jnp.max(jnp.abs(x))))


def test_hybrid_log_prob_and_logits_match_separate_computations():
  """A hybrid flow's log p is the flow's own (and the brute-force Jacobian's); its logits are the linear
  head applied to the latent ``z = F(x)``. ``init`` through ``__call__`` creates the head too."""
  config = dict(VECTOR, num_classes=3)
  model, variables, x = _init(config)
  assert set(variables["params"]["classifier_head"]) == {"kernel", "bias"}
  log_prob, logits = model.apply(variables, x, estimator=EXACT, method=model.log_prob_and_logits)
  np.testing.assert_allclose(log_prob, model.apply(variables, x, estimator=EXACT), rtol=1e-6)
  np.testing.assert_allclose(log_prob, _brute_force_log_prob(model, variables, x), atol=2e-4, rtol=1e-5)
  z = model.apply(variables, x, method=model.forward)
  head = variables["params"]["classifier_head"]
  np.testing.assert_allclose(logits, z @ head["kernel"] + head["bias"], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="num_classes"):
    plain = IResNetFlow(**VECTOR)
    plain.apply(plain.init(jax.random.key(0), x, estimator=EXACT), x, estimator=EXACT,
                method=plain.log_prob_and_logits)
