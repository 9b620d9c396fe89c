"""Residual Flows' estimators and the implicit-gradient inverse: unbiasedness, gradients, memory."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iresflow.core import fixed_point, logdet
from tests import helpers

N_KEYS = 4000


def _problem(lipschitz=0.9, seed=0):
  g = helpers.contractive_mlp(jax.random.key(seed), 4, 16, lipschitz)
  # Points where the Jacobian is large: elu is linear for positive pre-activations.
  x = 2.0 * jax.random.normal(jax.random.key(seed + 1), (3, 4))
  return g, x


def _mean_and_stderr(estimator, keys):
  values = jax.jit(jax.vmap(estimator))(keys)
  return np.asarray(values.mean(0)), np.asarray(values.std(0)) / math.sqrt(len(keys))


@pytest.mark.parametrize("distribution,settings", [("geometric", dict(geometric_p=0.3)),
                                                   ("poisson", dict(poisson_rate=4.0))])
def test_roulette_is_unbiased_where_the_truncated_series_is_not(distribution, settings):
  # J_g close to 0.7 I: the series converges slowly enough for truncation to show.
  w = 0.7 * jnp.eye(4) + 0.05 * jax.random.normal(jax.random.key(12), (4, 4))
  g = _tanh_layer(w)
  x = 0.2 * jax.random.normal(jax.random.key(13), (3, 4))
  _, exact = logdet.exact_logdet(g, x)
  keys = jax.random.split(jax.random.key(2), N_KEYS)
  roulette_mean, roulette_err = _mean_and_stderr(
      lambda k: logdet.roulette_logdet(k, g, x, distribution=distribution, n_probes=4, **settings)[1], keys)
  # Same expected number of terms (2 exact + 1 extra on average) but truncated: visibly biased.
  truncated_mean, truncated_err = _mean_and_stderr(
      lambda k: logdet.power_series_logdet(k, g, x, n_terms=3, n_probes=4)[1], keys)
  # Statistical tolerance: 5 standard errors of the mean over the keys.
  np.testing.assert_array_less(np.abs(roulette_mean - exact), 5 * roulette_err + 1e-4)
  assert np.max(np.abs(truncated_mean - exact) / (truncated_err + 1e-9)) > 10


def test_roulette_tail_probabilities():
  j = jnp.arange(1, 6)
  np.testing.assert_allclose(logdet.roulette_tail_probability(j, "geometric", 0.5), 0.5 ** np.arange(1, 6))
  # Poisson(2): P(M >= 1) = 1 - e^-2, P(M >= 2) = 1 - 3 e^-2.
  poisson = logdet.roulette_tail_probability(jnp.asarray([1, 2]), "poisson", 2.0)
  np.testing.assert_allclose(poisson, [1 - math.exp(-2), 1 - 3 * math.exp(-2)], rtol=1e-5)


def test_roulette_at_the_cap_is_the_truncated_series():
  g, x = _problem()
  # max_terms == n_exact_terms: M is clipped to 0, so the estimate is the 3-term series.
  _, capped = logdet.roulette_logdet(jax.random.key(3), g, x, n_exact_terms=3, max_terms=3, n_probes=8)
  probe_key, _ = jax.random.split(jax.random.key(3))
  _, series = logdet.power_series_logdet(probe_key, g, x, n_terms=3, n_probes=8)
  np.testing.assert_allclose(capped, series, rtol=1e-5)


def _exact_grad(g_of, w, x):
  return jax.grad(lambda w: jnp.sum(logdet.exact_logdet(g_of(w), x)[1]))(w)


def _tanh_layer(w):
  return lambda z: jnp.tanh(z @ w)


def test_neumann_gradient_matches_the_exact_gradient_in_expectation():
  w = 0.6 * jnp.eye(3) + 0.1 * jax.random.normal(jax.random.key(4), (3, 3))
  x = jax.random.normal(jax.random.key(5), (2, 3))
  exact = _exact_grad(_tanh_layer, w, x)
  neumann = jax.jit(jax.grad(lambda w: jnp.sum(logdet.power_series_logdet(
      jax.random.key(0), _tanh_layer(w), x, n_terms=40, n_probes=20_000, gradient="neumann", unroll=False)[1])))(w)
  np.testing.assert_allclose(neumann, exact, atol=0.03)
  # Roulette's Neumann gradient is unbiased too: average over keys.
  grads = jax.jit(jax.vmap(jax.grad(lambda w, k: jnp.sum(logdet.roulette_logdet(
      k, _tanh_layer(w), x, n_probes=50)[1])), in_axes=(None, 0)))(w, jax.random.split(jax.random.key(6), 400))
  np.testing.assert_allclose(grads.mean(0), exact, atol=4 * float(grads.std(0).max()) / math.sqrt(400) + 1e-3)


def test_neumann_value_equals_the_series_and_input_gradients_match_backprop():
  g, x = _problem()
  key = jax.random.key(7)
  _, backprop_value = logdet.power_series_logdet(key, g, x, n_terms=6, n_probes=2)
  _, neumann_value = logdet.power_series_logdet(key, g, x, n_terms=6, n_probes=2, gradient="neumann")
  np.testing.assert_allclose(neumann_value, backprop_value, rtol=1e-5)
  # For input gradients the two are different unbiased estimators of the same expectation.
  exact = jax.grad(lambda x: jnp.sum(logdet.exact_logdet(g, x)[1]))(x)
  neumann = jax.jit(jax.grad(lambda x: jnp.sum(logdet.power_series_logdet(
      key, g, x, n_terms=60, n_probes=20_000, gradient="neumann", unroll=False)[1])))(x)
  np.testing.assert_allclose(neumann, exact, atol=0.05)


def _temp_bytes(n_terms, gradient, unroll):
  g_of = lambda w: (lambda z: jnp.tanh(jnp.tanh(z @ w) @ w.T))
  w = 0.3 * jax.random.normal(jax.random.key(0), (256, 256))
  x = jax.random.normal(jax.random.key(1), (64, 256))
  loss = lambda w: jnp.sum(logdet.power_series_logdet(jax.random.key(2), g_of(w), x, n_terms=n_terms,
                                                      gradient=gradient, unroll=unroll)[1])
  compiled = jax.jit(jax.grad(loss)).lower(w).compile()
  return compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("unroll", [False, True])
def test_neumann_gradient_memory_is_flat_in_the_number_of_terms(unroll):
  # XLA's own accounting of the compiled gradient (deterministic; not a timing). In a loop the
  # terms reuse one body's buffers; unrolled, a few term-sized vectors (not g's activations) stay
  # in flight, which on this small g is a visible fraction.
  neumann_2, neumann_20 = _temp_bytes(2, "neumann", unroll), _temp_bytes(20, "neumann", unroll)
  backprop_2, backprop_20 = _temp_bytes(2, "backprop", unroll), _temp_bytes(20, "backprop", unroll)
  assert neumann_20 <= (1.4 if unroll else 1.01) * neumann_2
  assert backprop_20 > 3 * backprop_2


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(n_exact_terms=0), "n_exact_terms"),
        (dict(max_terms=1, n_exact_terms=2), "max_terms"),
        (dict(distribution="binomial"), "distribution"),
        (dict(geometric_p=1.0), "geometric_p"),
        (dict(distribution="poisson", poisson_rate=0.0), "poisson_rate"),
    ],
)
def test_roulette_bad_input_is_named(kwargs, match):
  with pytest.raises(ValueError, match=match):
    logdet.roulette_logdet(jax.random.key(0), lambda z: 0.5 * z, jnp.ones((2, 3)), **kwargs)


def test_series_rejects_unknown_gradient_mode():
  with pytest.raises(ValueError, match="gradient"):
    logdet.power_series_logdet(jax.random.key(0), lambda z: 0.5 * z, jnp.ones((2, 3)), n_terms=2,
                               gradient="adjoint")


# ------------------------------------------------------------------------------ implicit inverse
def test_inverse_gradient_wrt_output_matches_the_inverse_jacobian():
  g, _ = _problem(0.9)
  x = jax.random.normal(jax.random.key(8), (3, 4))
  y = x + g(x)
  weights = jnp.arange(1.0, 5.0)
  loss = lambda y: jnp.sum(jnp.sin(fixed_point.fixed_point_inverse(g, y, atol=1e-7, rtol=0.0)[0]) * weights)
  grad = jax.jit(jax.grad(loss))(y)
  x_star = fixed_point.fixed_point_inverse(g, y, atol=1e-7, rtol=0.0)[0]
  for i in range(3):
    jac_f = jax.jacfwd(lambda v: v + g(v[None])[0])(x_star[i])  # dF/dx at the inverse
    expected = np.linalg.solve(np.asarray(jac_f, np.float64).T, np.cos(np.asarray(x_star[i])) * np.arange(1, 5))
    np.testing.assert_allclose(grad[i], expected, rtol=1e-4, atol=1e-5)


def test_inverse_gradient_wrt_parameters_matches_finite_differences():
  w0 = 0.25 * jax.random.normal(jax.random.key(9), (4, 4))
  y = jax.random.normal(jax.random.key(10), (3, 4))

  def loss(w):
    x, _ = fixed_point.fixed_point_inverse(lambda z: jnp.tanh(z @ w), y, atol=1e-7, rtol=0.0)
    return jnp.sum(jnp.sin(x))

  grad = jax.jit(jax.grad(loss))(w0)
  eps = 1e-3
  for i, j in [(0, 0), (1, 3), (3, 2)]:
    step = jnp.zeros((4, 4)).at[i, j].set(eps)
    finite_difference = (loss(w0 + step) - loss(w0 - step)) / (2 * eps)
    assert float(grad[i, j]) == pytest.approx(float(finite_difference), abs=5e-4)


def test_training_in_the_sampling_direction():
  # Fit w so that F_w^{-1} maps y to a target: gradient descent through the inverse converges.
  y = jax.random.normal(jax.random.key(11), (8, 3))
  w_true = 0.4 * jnp.eye(3)
  target, _ = fixed_point.fixed_point_inverse(lambda z: jnp.tanh(z @ w_true), y, atol=1e-7, rtol=0.0)
  loss = jax.jit(jax.value_and_grad(lambda w: jnp.mean(
      (fixed_point.fixed_point_inverse(lambda z: jnp.tanh(z @ w), y, atol=1e-7, rtol=0.0)[0] - target) ** 2)))
  w = 0.1 * jnp.eye(3)
  first, _ = loss(w)
  for _ in range(200):
    value, grad = loss(w)
    w = w - 0.5 * grad
  assert float(value) < 1e-3 * float(first)
