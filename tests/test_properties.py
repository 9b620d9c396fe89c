"""Property-based tests (hypothesis): round trips and log-det signs over random shapes and coefficients."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings, strategies as st

from iresflow.core import fixed_point, logdet

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)


def _contractive(seed: int, dim: int, lipschitz: float):
  w = np.random.default_rng(seed).normal(size=(dim, dim))
  w *= lipschitz / np.linalg.svd(w, compute_uv=False)[0]
  w = jnp.asarray(w, jnp.float32)
  return lambda x: jnp.tanh(x @ w)  # Lip <= ||w|| = lipschitz


@SETTINGS
@given(seed=st.integers(0, 2**16), dim=st.integers(1, 6), batch=st.integers(1, 4),
       lipschitz=st.floats(0.05, 0.95), scale=st.floats(0.1, 5.0))
def test_inverse_round_trip(seed, dim, batch, lipschitz, scale):
  g = _contractive(seed, dim, lipschitz)
  x = scale * jax.random.normal(jax.random.key(seed), (batch, dim))
  y = x + g(x)
  x_back, info = fixed_point.fixed_point_inverse(g, y, atol=1e-6, rtol=1e-6, max_iters=2000)
  assert bool(jnp.all(info.converged))
  # ||x - x*|| <= residual / (1 - L): the residual bound turns into an error bound.
  tolerance = (1e-6 + 1e-6 * float(jnp.max(jnp.abs(y)))) * np.sqrt(dim) / (1 - lipschitz) + 1e-6
  assert float(jnp.max(jnp.abs(x_back - x))) <= tolerance


@SETTINGS
@given(seed=st.integers(0, 2**16), dim=st.integers(1, 6), lipschitz=st.floats(0.05, 0.99),
       scale=st.floats(0.0, 4.0))
def test_logdet_sign_is_positive_and_within_lemma_7(seed, dim, lipschitz, scale):
  g = _contractive(seed, dim, lipschitz)
  x = scale * jax.random.normal(jax.random.key(seed + 1), (3, dim))
  jacobians = logdet.residual_jacobians(g, x)
  signs, values = np.linalg.slogdet(np.eye(dim) + np.asarray(jacobians, np.float64))
  assert np.all(signs > 0)  # Lemma 6: det(I + J_g) > 0 when Lip(g) < 1
  lower, upper = logdet.logdet_bounds(lipschitz, dim)
  assert np.all(values >= lower - 1e-5) and np.all(values <= upper + 1e-5)
  _, exact = logdet.exact_logdet(g, x)
  np.testing.assert_allclose(exact, values, atol=1e-4)
