"""distrax and NumPyro adapters: log-probs equal the distribution's, the bijector composes, SVI recovers a
known posterior."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

distrax = pytest.importorskip("distrax")
numpyro = pytest.importorskip("numpyro")

import numpyro.distributions as npd  # noqa: E402
from numpyro.infer import SVI, Trace_ELBO  # noqa: E402
from numpyro.infer.util import log_density  # noqa: E402

from iresflow.core import ExactLogDet, Roulette  # noqa: E402
from iresflow.distributions import FlowDistribution  # noqa: E402
from iresflow.interop import numpyro_flow_param, to_distrax, to_distrax_bijector, to_numpyro  # noqa: E402
from iresflow.models import IResNetFlow  # noqa: E402
from iresflow.nn import ResidualSpec  # noqa: E402

MODEL = IResNetFlow(data_shape=(3,), stages=(), fc_blocks=2, fc_residual=ResidualSpec(hidden=16, dense_layers=2))


@pytest.fixture(scope="module", params=["density", "sampling"])
def dist(request):
  return FlowDistribution.create(jax.random.key(0), MODEL, direction=request.param)


def test_distrax_transformed_with_the_bijector_is_the_distribution(dist):
  x = jax.random.normal(jax.random.key(1), (6, 3))
  base = distrax.MultivariateNormalDiag(jnp.zeros(3), jnp.ones(3))  # the model's standard-normal prior
  transformed = distrax.Transformed(base, to_distrax_bijector(dist))
  np.testing.assert_allclose(transformed.log_prob(x), dist.log_prob(x), rtol=1e-5, atol=1e-5)
  adapted = to_distrax(dist)
  np.testing.assert_allclose(adapted.log_prob(x), dist.log_prob(x), rtol=1e-6)
  # Through jit as a pytree, like any distrax distribution.
  np.testing.assert_allclose(jax.jit(lambda d, x: d.log_prob(x))(adapted, x), dist.log_prob(x), rtol=1e-5)
  samples, log_prob = adapted.sample_and_log_prob(seed=jax.random.key(2), sample_shape=(4,))
  assert samples.shape == (4, 3)
  np.testing.assert_allclose(log_prob, dist.log_prob(samples), rtol=1e-4, atol=1e-4)


def test_the_bijector_composes_in_a_distrax_chain(dist):
  # y = 2 x + 1 after the flow: log p(y) = log p_flow((y - 1) / 2) - 3 log 2 (change of variables).
  chain = distrax.Chain([distrax.Block(distrax.ScalarAffine(shift=1.0, scale=2.0), 1), to_distrax_bijector(dist)])
  transformed = distrax.Transformed(distrax.MultivariateNormalDiag(jnp.zeros(3), jnp.ones(3)), chain)
  y = jax.random.normal(jax.random.key(3), (5, 3))
  expected = dist.log_prob((y - 1.0) / 2.0) - 3 * np.log(2.0)
  np.testing.assert_allclose(transformed.log_prob(y), expected, rtol=1e-5, atol=1e-5)
  u = jax.random.normal(jax.random.key(4), (5, 3))
  y, log_det = chain.forward_and_log_det(u)
  u_back, inverse_log_det = chain.inverse_and_log_det(y)
  np.testing.assert_allclose(u_back, u, atol=3e-5)
  np.testing.assert_allclose(log_det + inverse_log_det, 0.0, atol=3e-5)


def test_numpyro_prior_log_density_is_the_distributions():
  dist = FlowDistribution.create(jax.random.key(0), MODEL)
  x = jax.random.normal(jax.random.key(5), (7, 3))

  def model():
    with numpyro.plate("data", 7):
      numpyro.sample("x", to_numpyro(dist), obs=x)

  value, _ = log_density(model, (), {}, {})
  np.testing.assert_allclose(value, jnp.sum(dist.log_prob(x)), rtol=1e-5)


def test_numpyro_svi_with_a_flow_guide_recovers_a_gaussian_posterior():
  # theta ~ N(0, I_2), y_i ~ N(theta, 0.5^2 I_2), i = 1..10: the posterior is N(m, s^2 I) with
  # s^2 = 1 / (1 + 10 / 0.25) and m = s^2 sum(y) / 0.25.
  y = 1.5 + 0.5 * jax.random.normal(jax.random.key(6), (10, 2))
  variance = 1.0 / (1.0 + 10 / 0.25)
  mean = variance * jnp.sum(y, axis=0) / 0.25

  def model():
    theta = numpyro.sample("theta", npd.Normal(0.0, 1.0).expand([2]).to_event(1))
    with numpyro.plate("data", 10):
      numpyro.sample("y", npd.Normal(theta, 0.5).to_event(1), obs=y)

  flow = FlowDistribution.create(
      jax.random.key(7), IResNetFlow(data_shape=(2,), stages=(), fc_blocks=2, prior="learned",
                                     fc_residual=ResidualSpec(hidden=16, dense_layers=2)), direction="sampling")

  def guide():
    numpyro.sample("theta", to_numpyro(numpyro_flow_param("flow", flow)))

  optimizer = numpyro.optim.optax_to_numpyro(optax.adam(optax.cosine_decay_schedule(1e-2, 1500)))
  svi = SVI(model, guide, optimizer, Trace_ELBO(num_particles=8))
  result = svi.run(jax.random.key(8), 1500, progress_bar=False)
  fitted = numpyro.handlers.substitute(lambda: numpyro_flow_param("flow", flow), result.params)()
  samples = np.asarray(fitted.sample(jax.random.key(9), 20000))
  # Monte Carlo error of 20,000 samples: 0.001 on the mean; the tolerances are the fit's.
  # Measured: mean off by 0.008 (0.05 posterior standard deviations), standard deviations by 2%.
  np.testing.assert_allclose(samples.mean(0), mean, atol=0.025)
  np.testing.assert_allclose(samples.std(0), np.sqrt(variance), rtol=0.06)


def test_adapters_reject_what_they_cannot_represent():
  random = FlowDistribution.create(jax.random.key(0), MODEL, estimator=Roulette())
  with pytest.raises(ValueError, match="key: a distrax distribution has no key"):
    to_distrax(random)
  to_distrax(random, key=jax.random.key(1)).log_prob(jnp.zeros((2, 3)))  # a fixed draw is accepted
  with pytest.raises(TypeError, match="dist: expected an iresflow.FlowDistribution"):
    to_numpyro(object())
  conditional = FlowDistribution.create(
      jax.random.key(0), IResNetFlow(data_shape=(3,), stages=(), fc_blocks=1, context_size=2),
      estimator=ExactLogDet())
  with pytest.raises(ValueError, match="context: the distribution is conditional"):
    to_numpyro(conditional)
  with pytest.raises(ValueError, match=r"context: expected shape \(\.\.\., 2\)"):
    to_distrax_bijector(conditional, context=jnp.zeros(3))
  # A fixed context: the batch shape is its leading shape, log-probs those of the distribution.
  contexts = jax.random.normal(jax.random.key(2), (4, 2))
  adapted = to_numpyro(conditional, context=contexts)
  assert adapted.batch_shape == (4,) and adapted.event_shape == (3,)
  x = jax.random.normal(jax.random.key(3), (4, 3))
  np.testing.assert_allclose(adapted.log_prob(x), conditional.log_prob(x, context=contexts), rtol=1e-6)
  assert adapted.sample(jax.random.key(4), (5,)).shape == (5, 4, 3)
