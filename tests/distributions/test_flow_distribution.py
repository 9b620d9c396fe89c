"""FlowDistribution: exact log-probs against the whole map's Jacobian, both directions, pytree, fitting, VI."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from iresflow.core import ExactLogDet, PowerSeries, Roulette
from iresflow.distributions import FlowDistribution, default_estimator, fit, fit_variational
from iresflow.models import IResNetFlow
from iresflow.nn import LipschitzConstraint, ResidualSpec

MODEL = IResNetFlow(data_shape=(3,), stages=(), fc_blocks=3, fc_residual=ResidualSpec(hidden=16, activation="lipswish"),
                    prior="learned")


@pytest.fixture(scope="module", params=["density", "sampling"])
def dist(request):
  return FlowDistribution.create(jax.random.key(0), MODEL, direction=request.param)


def _brute_force_log_prob(dist, x):
  """``log p(x)`` from the materialised Jacobian of the flow's cheap map (``jax.jacfwd`` + ``slogdet``).

  Density direction: ``u = F(x)``, ``log p(x) = log p_u(u) + log|det J_F(x)|``. Sampling direction:
  ``x = F(u)``, ``log q(x) = log p_u(u) - log|det J_F(u)|``.
  """
  if dist.direction == "density":
    cheap, point, sign_of_logdet = (lambda x: dist.inverse_and_log_det(x)[0]), x, 1.0
  else:
    point = dist.inverse_and_log_det(x)[0]
    cheap, sign_of_logdet = (lambda u: dist.forward_and_log_det(u)[0]), -1.0
  jacobians = jax.vmap(jax.jacfwd(cheap))(point)
  sign, logdet = np.linalg.slogdet(np.asarray(jacobians, np.float64))
  assert np.all(sign > 0)
  u = point if dist.direction == "sampling" else cheap(x)
  return np.asarray(dist.base_log_prob(u), np.float64) + sign_of_logdet * logdet


def test_exact_log_prob_equals_the_whole_maps_jacobian(dist):
  x = jax.random.normal(jax.random.key(1), (6, 3))
  assert isinstance(dist.estimator, ExactLogDet)  # D = 3: the default is exact
  np.testing.assert_allclose(dist.log_prob(x), _brute_force_log_prob(dist, x), rtol=1e-5, atol=1e-4)


def test_bijector_round_trip_and_log_dets_cancel(dist):
  u = jax.random.normal(jax.random.key(2), (4, 3))
  x, forward = dist.forward_and_log_det(u)
  u_back, inverse, info = dist.inverse_and_log_det(x, report=True)
  np.testing.assert_allclose(u_back, u, atol=2e-5)
  np.testing.assert_allclose(forward + inverse, 0.0, atol=2e-5)
  # The fixed point is on the expensive side only: the report says so.
  assert (info is None) == (dist.direction == "density")


def test_sample_and_log_prob_agree_with_log_prob_and_batch_shapes(dist):
  x, log_prob, info = dist.sample_and_log_prob(jax.random.key(3), 5, report=True)
  assert x.shape == (5, 3) and log_prob.shape == (5,)
  np.testing.assert_allclose(log_prob, dist.log_prob(x), rtol=1e-5, atol=5e-5)
  if dist.direction == "density":
    assert bool(jnp.all(info.converged))
  assert dist.log_prob(x[0]).shape == ()
  assert dist.log_prob(x[:4].reshape(2, 2, 3)).shape == (2, 2)
  np.testing.assert_array_equal(dist.sample(jax.random.key(3), 5), x)  # the same draws


def test_a_pytree_through_jit_vmap_and_grad():
  dist = FlowDistribution.create(jax.random.key(0), MODEL)
  x = jax.random.normal(jax.random.key(1), (4, 3))
  leaves, treedef = jax.tree.flatten(dist)
  assert len(leaves) == len(jax.tree.leaves(dist.variables))  # settings are static, parameters are leaves
  np.testing.assert_allclose(jax.jit(lambda d, x: d.log_prob(x))(dist, x), dist.log_prob(x), rtol=1e-6)
  np.testing.assert_allclose(jax.vmap(lambda d, x: d.log_prob(x), in_axes=(None, 0))(dist, x), dist.log_prob(x),
                             rtol=1e-6)
  grads = jax.grad(lambda d: jnp.sum(d.log_prob(x)))(dist)
  assert jax.tree.structure(grads) == treedef
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_default_estimator_by_dimension_and_bad_input():
  assert isinstance(default_estimator(16), ExactLogDet) and isinstance(default_estimator(17), Roulette)
  big = FlowDistribution.create(jax.random.key(0), IResNetFlow(data_shape=(20,), stages=(), fc_blocks=1))
  with pytest.raises(ValueError, match="key: log_prob needs a PRNG key"):
    big.log_prob(jnp.zeros((2, 20)))
  assert big.log_prob(jnp.zeros((2, 20)), key=jax.random.key(0)).shape == (2,)
  dist = FlowDistribution.create(jax.random.key(0), MODEL)
  with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., 3\)"):
    dist.log_prob(jnp.zeros((2, 4)))
  with pytest.raises(TypeError, match="x: expected floating-point"):
    dist.log_prob(jnp.zeros((2, 3), jnp.int32))
  with pytest.raises(ValueError, match="n: expected a positive int"):
    dist.sample(jax.random.key(0), 0)
  with pytest.raises(ValueError, match="direction"):
    FlowDistribution.create(jax.random.key(0), MODEL, direction="forward")
  with pytest.raises(TypeError, match="estimator"):
    FlowDistribution.create(jax.random.key(0), MODEL, estimator=PowerSeries)
  with pytest.raises(ValueError, match="x_init"):
    FlowDistribution.create(jax.random.key(0), MODEL, x_init=jnp.zeros((4, 2)))


def _gaussian_data(n, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.standard_normal((n, 3)) * np.array([2.0, 0.5, 1.0]) + np.array([1.0, -1.0, 0.0])).astype(np.float32)


def _banana_data(n, seed=0):
  """``x2 = x1^2 + noise``: not Gaussian, so ActNorm's standardisation alone does not fit it."""
  rng = np.random.default_rng(seed)
  x1, noise = rng.standard_normal((2, n))
  return np.stack([x1, x1**2 - 1 + 0.3 * noise, rng.standard_normal(n)], 1).astype(np.float32)


def test_fit_improves_the_validation_likelihood_and_returns_the_best():
  data = _banana_data(1200)
  dist = FlowDistribution.create(jax.random.key(0), MODEL, x_init=data[:256])
  trained, losses = fit(jax.random.key(1), dist, data, max_epochs=8, batch_size=64, patience=3,
                        optimizer=optax.adam(3e-3), progress=False)
  assert len(losses["train"]) == len(losses["val"]) >= 2
  assert min(losses["val"]) < losses["val"][0] - 0.1
  # The returned parameters are those of the best validation epoch: their loss on the same split is that minimum.
  order = np.asarray(jax.random.permutation(jax.random.split(jax.random.key(1), 4)[0], len(data)))
  val = data[order[:120]]
  np.testing.assert_allclose(-float(jnp.mean(trained.log_prob(val))), min(losses["val"]), rtol=1e-4)


def test_fit_stops_on_a_non_finite_step_and_rejects_bad_input():
  data = _gaussian_data(200)
  dist = FlowDistribution.create(jax.random.key(0), MODEL)
  with pytest.raises(FloatingPointError, match="step 1 had a non-finite loss"):
    fit(jax.random.key(1), dist, data, optimizer=optax.sgd(1e38), max_epochs=2, progress=False)
  with pytest.raises(ValueError, match="data: expected floating-point examples of shape"):
    fit(jax.random.key(1), dist, data[:, :2], progress=False)
  with pytest.raises(ValueError, match="val_fraction"):
    fit(jax.random.key(1), dist, data, val_fraction=1.0, progress=False)
  sampling = dist.replace(direction="sampling")
  with pytest.raises(ValueError, match="fit_variational"):
    fit(jax.random.key(1), sampling, data, progress=False)


def test_variational_fit_of_a_correlated_gaussian_reaches_kl_near_zero():
  """KL(q || p) = E_q[log q - log p] for the normalised target, estimated with 4,000 samples."""
  covariance = jnp.array([[1.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 1.0]])
  precision = jnp.linalg.inv(covariance)
  log_z = 0.5 * 3 * math.log(2 * math.pi) + 0.5 * math.log(float(jnp.linalg.det(covariance)))
  log_density = lambda x: -0.5 * x @ precision @ x
  dist = FlowDistribution.create(jax.random.key(0), MODEL, direction="sampling")
  fitted, losses = fit_variational(jax.random.key(1), dist, log_density, steps=600, samples_per_step=64,
                                   optimizer=optax.adam(3e-3), progress=False)
  x, log_q = fitted.sample_and_log_prob(jax.random.key(2), 4000)
  kl = float(jnp.mean(log_q - (jax.vmap(log_density)(x) - log_z)))
  assert 0.0 <= kl + 0.01 and kl < 0.05, kl  # tolerance: 0.05 nats (Monte Carlo s.e. of the estimate < 0.005)
  np.testing.assert_allclose(np.cov(np.asarray(x).T), covariance, atol=0.12)
  with pytest.raises(ValueError, match="direction='sampling'"):
    fit_variational(jax.random.key(1), dist.replace(direction="density"), log_density, progress=False)
  with pytest.raises(ValueError, match="log_density: expected a scalar"):
    fit_variational(jax.random.key(1), dist, lambda x: x, progress=False)


def test_variational_fit_of_a_banana_matches_the_moments_of_exact_samples():
  """Banana: x1 ~ N(0, 1), x2 | x1 ~ N(x1^2 / 2, 1/4); Z = pi. Moments of q against 10^6 exact (ancestral) draws.

  Reverse KL under-covers the tails (mode seeking), so the tolerances are the fit's, measured (this seed and
  one other): KL 0.006-0.007 nats, means within 0.03, variances 3-5% (x1) and 11% (x2) low.
  """
  log_density = lambda x: -0.5 * x[0]**2 - 2.0 * (x[1] - 0.5 * x[0]**2)**2
  model = IResNetFlow(data_shape=(2,), stages=(), fc_blocks=8, prior="learned",
                      fc_residual=ResidualSpec(hidden=32, dense_layers=2, constraint=LipschitzConstraint(coeff=0.97)))
  dist = FlowDistribution.create(jax.random.key(0), model, direction="sampling")
  fitted, _ = fit_variational(jax.random.key(1), dist, log_density, steps=1500, samples_per_step=128,
                              optimizer=optax.adam(optax.cosine_decay_schedule(5e-3, 1500)), progress=False)
  x, log_q = fitted.sample_and_log_prob(jax.random.key(2), 50_000)
  kl = float(jnp.mean(log_q - jax.vmap(log_density)(x))) + math.log(math.pi)
  assert -0.01 < kl < 0.02, kl  # Monte Carlo s.e. of the estimate ~0.001
  rng = np.random.default_rng(0)
  x1 = rng.standard_normal(1_000_000)
  exact = np.stack([x1, 0.5 * x1**2 + 0.5 * rng.standard_normal(1_000_000)], axis=1)
  x = np.asarray(x)
  np.testing.assert_allclose(x.mean(0), exact.mean(0), atol=0.05)
  np.testing.assert_allclose(np.var(x, axis=0), np.var(exact, axis=0), rtol=0.15)
  assert abs(np.corrcoef(x.T)[0, 1]) < 0.1  # uncorrelated, as the exact draws (the banana is symmetric in x1)


def test_log_prob_gradient_in_x_matches_finite_differences(dist):
  """Through the cheap pass (density) and through the fixed-point inverse's implicit gradient (sampling)."""
  x = jax.random.normal(jax.random.key(4), (3, 3))
  grad = jax.grad(lambda x: jnp.sum(dist.log_prob(x)))(x)
  eps = 1e-2
  for i, j in [(0, 0), (1, 2), (2, 1)]:
    step = jnp.zeros_like(x).at[i, j].set(eps)
    finite_difference = (jnp.sum(dist.log_prob(x + step)) - jnp.sum(dist.log_prob(x - step))) / (2 * eps)
    np.testing.assert_allclose(grad[i, j], finite_difference, rtol=1e-2, atol=2e-3)


def test_fit_and_fit_variational_stop_at_max_seconds():
  """A time budget ends fits whose step and epoch limits would take hours (no timing asserted)."""
  data = np.random.default_rng(0).standard_normal((200, 3)).astype(np.float32)
  dist = FlowDistribution.create(jax.random.key(0), MODEL)
  fitted, losses = fit(jax.random.key(1), dist, data, max_epochs=10**6, patience=10**6, max_seconds=1.0,
                       progress=False)
  assert 1 <= len(losses["train"]) < 10**6 and len(losses["val"]) == len(losses["train"])
  assert np.all(np.isfinite(fitted.log_prob(data[:5])))
  dist.log_prob(data[:5])  # the distribution passed in stays usable (fit copies what its steps donate)
  sampler = dist.replace(direction="sampling")
  _, vi_losses = fit_variational(jax.random.key(2), sampler, lambda x: -0.5 * x @ x, steps=10**7, max_seconds=1.0,
                                 progress=False)
  assert 1 <= len(vi_losses) < 10**7
  for bad in (0, -1.0, "10"):
    with pytest.raises(ValueError, match="max_seconds: expected a positive number"):
      fit(jax.random.key(1), dist, data, max_seconds=bad, progress=False)
