"""The series' coefficients (the sign of eq. 4) and the Cayley transform's log-det, against exact values.

A diagonal linear ``g(x) = x * lam`` has ``tr(J^k) = sum_i lam_i^k``, and with Rademacher probes
Hutchinson's estimate of a diagonal matrix's trace is exact (``v_i^2 = 1``), so every estimator's
value is a known number there, with no statistical tolerance: a dropped ``(-1)^{k+1}`` (the sign
bug two forks of Residual Flows carry in their exact-trace path) changes it.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iresflow.core import ExactLogDet, PowerSeries, Roulette, logdet
from tests import helpers

LAM = np.array([0.8, -0.7, 0.3, -0.2, 0.05], np.float64)  # negative eigenvalues: the sign matters


def _diagonal_problem():
  g = lambda x: x * jnp.asarray(LAM, x.dtype)
  x = jnp.ones((2, LAM.size), jnp.float32)
  return g, x


def _truncated(n_terms, transform):
  """The truncated series for the diagonal problem, written out independently of the library."""
  total = 0.0
  for k in range(1, n_terms + 1):
    if transform == "residual":
      total += (-1) ** (k + 1) * np.sum(LAM**k) / k
    elif k % 2 == 1:
      total += -2 * np.sum(LAM**k) / k
  return total


EXACT = {"residual": float(np.sum(np.log1p(LAM))), "cayley": float(np.sum(np.log1p(-LAM) - np.log1p(LAM)))}


@pytest.mark.parametrize("transform", ["residual", "cayley"])
def test_series_coefficients_alternate_in_sign(transform):
  expected = [(-1) ** (k + 1) / k if transform == "residual" else (-2 / k if k % 2 else 0.0) for k in range(1, 9)]
  got = [float(logdet.series_coefficient(k, transform)) for k in range(1, 9)]
  np.testing.assert_allclose(got, expected, rtol=1e-7)


@pytest.mark.parametrize("transform", ["residual", "cayley"])
@pytest.mark.parametrize("n_terms", [1, 2, 5, 60])
def test_every_estimator_sums_the_signed_series(transform, n_terms):
  g, x = _diagonal_problem()
  expected = _truncated(n_terms, transform)
  np.testing.assert_allclose(logdet.exact_series(g, x, n_terms, transform=transform), expected, rtol=1e-5, atol=1e-6)
  for gradient in ("backprop", "neumann"):
    _, value = logdet.power_series_logdet(jax.random.key(0), g, x, n_terms=n_terms, probe="rademacher",
                                          gradient=gradient, unroll=n_terms < 10, transform=transform)
    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)
  # The roulette at its cap (max_terms = n_exact_terms) is the truncated series.
  _, value = logdet.roulette_logdet(jax.random.key(0), g, x, n_exact_terms=n_terms, max_terms=n_terms,
                                    probe="rademacher", transform=transform)
  np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)
  if n_terms == 60:  # converged: the log-det itself, which exact_logdet computes by slogdet
    np.testing.assert_allclose(expected, EXACT[transform], rtol=1e-6)
    np.testing.assert_allclose(logdet.exact_logdet(g, x, transform=transform)[1], EXACT[transform], rtol=1e-5)


@pytest.mark.parametrize("transform", ["residual", "cayley"])
def test_gradient_of_the_series_is_the_gradient_of_the_log_det(transform):
  # d/dlam of the exact log-det, by hand: 1 / (1 + lam), or -1/(1 - lam) - 1/(1 + lam).
  lam = jnp.asarray(LAM, jnp.float32)
  x = jnp.ones((1, LAM.size), jnp.float32)
  exact = 1 / (1 + LAM) if transform == "residual" else -1 / (1 - LAM) - 1 / (1 + LAM)
  for gradient in ("backprop", "neumann"):
    grad = jax.grad(lambda lam: jnp.sum(logdet.power_series_logdet(
        jax.random.key(0), lambda z: z * lam, x, n_terms=80, probe="rademacher", gradient=gradient, unroll=False,
        transform=transform)[1]))(lam)
    np.testing.assert_allclose(grad, exact, rtol=2e-4, atol=1e-4)


def _contraction(lipschitz=0.8):
  g = helpers.contractive_mlp(jax.random.key(0), 4, 16, lipschitz)
  x = 2.0 * jax.random.normal(jax.random.key(1), (3, 4))
  return g, x


def test_cayley_exact_logdet_is_the_log_det_of_the_cayley_map():
  g, x = _contraction()
  _, value = logdet.exact_logdet(g, x, transform="cayley")
  for i in range(x.shape[0]):
    jac = np.asarray(jax.jacfwd(lambda z: g(z[None])[0])(x[i]), np.float64)
    eye = np.eye(4)
    cayley_jacobian = (eye - jac) @ np.linalg.inv(eye + jac)  # J of 2 (I + g)^{-1} - I at u = x
    np.testing.assert_allclose(value[i], np.linalg.slogdet(cayley_jacobian)[1], rtol=1e-4, atol=1e-5)


def test_cayley_truncation_error_within_its_bound_and_lemma_7_analogue():
  lipschitz = 0.8
  g, x = _contraction(lipschitz)
  _, exact = logdet.exact_logdet(g, x, transform="cayley")
  lower, upper = logdet.logdet_bounds(lipschitz, 4, transform="cayley")
  assert np.all(np.asarray(exact) >= lower) and np.all(np.asarray(exact) <= upper)
  for n_terms in (1, 3, 5, 10):
    series = logdet.exact_series(g, x, n_terms, transform="cayley")
    bound = logdet.series_truncation_bound(lipschitz, 4, n_terms, transform="cayley")
    np.testing.assert_array_less(np.abs(np.asarray(series - exact)), bound + 1e-5)
  # Odd terms only: n = 2 keeps what n = 1 keeps, and the bound says so.
  assert logdet.series_truncation_bound(0.8, 4, 2, transform="cayley") == pytest.approx(
      logdet.series_truncation_bound(0.8, 4, 1, transform="cayley"))
  assert logdet.series_truncation_bound(0.8, 1, 0, transform="cayley") == pytest.approx(2 * math.atanh(0.8))


def test_cayley_roulette_is_unbiased():
  g, x = _contraction()
  _, exact = logdet.exact_logdet(g, x, transform="cayley")
  keys = jax.random.split(jax.random.key(2), 3000)
  values = jax.jit(jax.vmap(lambda k: logdet.roulette_logdet(k, g, x, geometric_p=0.3, n_probes=4,
                                                             transform="cayley")[1]))(keys)
  mean, stderr = np.asarray(values.mean(0)), np.asarray(values.std(0)) / math.sqrt(len(keys))
  # Statistical tolerance: 5 standard errors of the mean over the keys.
  np.testing.assert_array_less(np.abs(mean - np.asarray(exact)), 5 * stderr + 1e-4)


@pytest.mark.parametrize("estimator", [ExactLogDet(), PowerSeries(n_terms=3), Roulette()])
def test_estimators_pass_the_transform_and_reject_unknown_ones(estimator):
  g, x = _diagonal_problem()
  _, cayley = estimator(jax.random.key(0), g, x, transform="cayley")
  _, residual = estimator(jax.random.key(0), g, x)
  assert not np.allclose(cayley, residual)
  with pytest.raises(ValueError, match="transform"):
    estimator(jax.random.key(0), g, x, transform="affine")
  with pytest.raises(ValueError, match="transform"):
    logdet.series_truncation_bound(0.5, 2, 3, transform="affine")
