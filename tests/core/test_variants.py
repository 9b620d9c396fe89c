"""The core functions give the same results with and without ``jax.jit`` (``chex.variants``, as distrax does)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from iresflow.core import ExactLogDet, FixedPointSolver, PowerSeries, Roulette, power_iteration, soft_normalize
from tests import helpers


class CoreVariantsTest(chex.TestCase):

  def setUp(self):
    super().setUp()
    self.g = helpers.contractive_mlp(jax.random.key(0), 4, 8, 0.7)
    self.x = jax.random.normal(jax.random.key(1), (3, 4))

  @chex.variants(with_jit=True, without_jit=True)
  def test_fixed_point_solver(self):
    y = self.x + self.g(self.x)
    x, info = self.variant(lambda y: FixedPointSolver(atol=1e-6, rtol=0.0)(self.g, y))(y)
    np.testing.assert_allclose(x, self.x, atol=1e-5)
    self.assertTrue(bool(jnp.all(info.converged)))

  @chex.variants(with_jit=True, without_jit=True)
  def test_estimators_agree_with_the_exact_log_det(self):
    _, exact = ExactLogDet()(None, self.g, self.x)
    key = jax.random.key(2)
    for estimator in (PowerSeries(n_terms=20, n_probes=4000, unroll=False), Roulette(n_probes=4000, geometric_p=0.3)):
      _, value = self.variant(lambda key, x, estimator=estimator: estimator(key, self.g, x))(key, self.x)
      chex.assert_shape(value, (3,))
      np.testing.assert_allclose(value, exact, atol=0.05)

  @chex.variants(with_jit=True, without_jit=True)
  def test_power_iteration_and_eq_2(self):
    w = jax.random.normal(jax.random.key(3), (5, 4))
    sigma, _ = self.variant(lambda u: power_iteration(lambda v: v @ w, u, 100))(jnp.ones(5))
    np.testing.assert_allclose(sigma, np.linalg.svd(np.asarray(w), compute_uv=False)[0], rtol=1e-4)
    w_hat = self.variant(lambda w, sigma: soft_normalize(w, sigma, 0.9))(w, sigma)
    np.testing.assert_allclose(np.linalg.svd(np.asarray(w_hat), compute_uv=False)[0], 0.9, rtol=1e-4)
