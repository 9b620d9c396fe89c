"""Conditional flows p(x | c): exact log-probs against the Jacobian in x at fixed c, round trips given c,
certificates for every context, class-conditional sampling, and bad contexts."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from iresflow import certify
from iresflow.core import ExactLogDet
from iresflow.distributions import FlowDistribution, fit
from iresflow.models import IResNetFlow
from iresflow.nn import ResidualSpec

VECTOR = IResNetFlow(data_shape=(3,), stages=(), fc_blocks=3, fc_residual=ResidualSpec(hidden=16, dense_layers=2),
                     context_size=2, context_encoder=(8,), prior="conditional")
# Images: a chain stage, and a DenseNet g with CLipSwish in Monotone blocks (context shifts broadcast over space).
IMAGE = IResNetFlow(data_shape=(4, 4, 1), stages=(1, 1), residual=ResidualSpec(hidden=4, kernel_sizes=(3, 1)),
                    fc_blocks=1, fc_residual=ResidualSpec(hidden=8, dense_layers=2), context_size=3)
MONOTONE = IResNetFlow(data_shape=(4,), stages=(), fc_blocks=2, block_type="monotone", context_size=2,
                       fc_residual=ResidualSpec(hidden=4, dense_layers=3, architecture="densenet",
                                                activation="clipswish"))
MODELS = {"vector": VECTOR, "image": IMAGE, "monotone": MONOTONE}


def _random_context(model, key, n):
  return jax.random.normal(key, (n, model.context_size))


@pytest.fixture(scope="module", params=[(name, direction) for name in MODELS for direction in ("density", "sampling")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def conditional(request):
  name, direction = request.param
  model = MODELS[name]
  key = jax.random.key(0)
  dist = FlowDistribution.create(key, model, estimator=ExactLogDet(), direction=direction)
  # Perturb the context weights so that every context path matters (the prior head starts at zero).
  params = jax.tree_util.tree_map_with_path(
      lambda path, a: a + 0.3 * jax.random.normal(jax.random.fold_in(key, hash(str(path)) % 2**31), a.shape)
      if "context" in str(path) or "prior_head" in str(path) else a, dist.variables["params"])
  return dist.replace(variables={**dist.variables, "params": params})


def test_exact_log_prob_equals_prior_plus_slogdet_of_the_jacobian_in_x_at_fixed_context(conditional):
  dist = conditional
  n = 4
  x = jax.random.normal(jax.random.key(1), (n, *dist.event_shape))
  c = _random_context(dist.model, jax.random.key(2), n)
  if dist.direction == "density":  # the cheap map u = F(x; c)
    def cheap(xi, ci):
      return dist.inverse_and_log_det(xi, context=ci)[0]
    point, sign = x, 1.0
  else:  # the cheap map x = F(u; c)
    point = dist.inverse_and_log_det(x, context=c)[0]

    def cheap(ui, ci):
      return dist.forward_and_log_det(ui, context=ci)[0].reshape(-1)
    sign = -1.0
  # Reverse mode: the fixed points (Monotone blocks, the sampling direction) have implicit VJPs only.
  jacobians = jax.vmap(jax.jacrev(lambda p, ci: cheap(p, ci).reshape(-1)))(point, c)
  jacobians = np.asarray(jacobians, np.float64).reshape(n, dist.dimension, dist.dimension)
  signs, logdets = np.linalg.slogdet(jacobians)
  assert np.all(signs > 0)
  u = jax.vmap(cheap)(x, c) if dist.direction == "density" else point
  expected = np.asarray(dist.base_log_prob(u.reshape(n, -1), context=c), np.float64) + sign * logdets
  np.testing.assert_allclose(dist.log_prob(x, context=c), expected, rtol=1e-5, atol=2e-4)
  # The context matters: other contexts, other densities.
  assert np.max(np.abs(dist.log_prob(x, context=c[::-1]) - dist.log_prob(x, context=c))) > 1e-3


def test_round_trip_given_the_context(conditional):
  dist = conditional
  u = jax.random.normal(jax.random.key(3), (5, dist.dimension))
  c = _random_context(dist.model, jax.random.key(4), 5)
  x, forward = dist.forward_and_log_det(u, context=c)
  u_back, inverse = dist.inverse_and_log_det(x, context=c)
  np.testing.assert_allclose(u_back, u, atol=5e-5)
  np.testing.assert_allclose(forward + inverse, 0.0, atol=5e-5)
  # Samples and their log-probs from one pass agree with log_prob given the same contexts.
  samples, log_prob = dist.sample_and_log_prob(jax.random.key(5), 5, context=c)
  assert samples.shape == (5, 5, *dist.event_shape)  # n samples for each of the 5 contexts
  np.testing.assert_allclose(log_prob, dist.log_prob(samples, context=c), rtol=1e-4, atol=2e-4)


def test_the_certificate_bounds_g_in_x_for_every_context():
  dist = FlowDistribution.create(jax.random.key(6), VECTOR)
  certificate = certify(dist.model, dist.variables)
  assert certificate.certified, certificate.table()
  views = dist.model.blocks(dist.variables)
  contexts = 3.0 * jax.random.normal(jax.random.key(7), (64, VECTOR.context_size))
  x = jax.random.normal(jax.random.key(8), (64, 3))
  for view, block in zip(views, certificate.blocks):
    # g sees the embedded context (context_encoder), the model's own embedding of it.
    embedded = dist.model.apply(dist.variables, contexts, 64, method=dist.model._embed_context)

    def g(xi, ci, view=view):
      return view.block.apply(view.variables, xi[None], ci[None], method="residual")[0]
    jacobians = jax.vmap(jax.jacfwd(g))(x, embedded)
    norms = np.linalg.norm(np.asarray(jacobians, np.float64), ord=2, axis=(1, 2))
    assert np.max(norms) <= block.lipschitz_bound + 1e-6
    assert block.lipschitz_bound < 1


CENTERS = np.array([[3.0, 0.0], [-1.5, 2.6], [-1.5, -2.6]], np.float32)


def test_a_class_conditional_flow_samples_the_class_it_is_given():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, 3000)
  x = CENTERS[labels] + 0.3 * rng.standard_normal((3000, 2)).astype(np.float32)
  one_hot = np.eye(3, dtype=np.float32)
  # A standard-normal base: only the blocks' conditioning can move the mass to the class's centre.
  model = IResNetFlow(data_shape=(2,), stages=(), fc_blocks=4, fc_residual=ResidualSpec(hidden=32, dense_layers=2),
                      context_size=3, context_encoder=(16,))
  dist = FlowDistribution.create(jax.random.key(0), model, x_init=x[:256], context_init=one_hot[labels[:256]])
  dist, losses = fit(jax.random.key(1), dist, x, context=one_hot[labels], max_epochs=20, patience=3,
                     optimizer=optax.adam(3e-3), progress=False)
  # Entropy of N(mu, 0.09 I) in 2-D: log(2 pi e 0.09) = 0.43 nats; the fit gets within 0.2 of it.
  assert min(losses["val"]) < 0.63
  for k in range(3):
    samples = np.asarray(dist.sample(jax.random.key(10 + k), 200, context=one_hot[k]))
    nearest = np.argmin(((samples[:, None] - CENTERS[None]) ** 2).sum(-1), axis=1)
    assert np.mean(nearest == k) > 0.95, (k, np.mean(nearest == k))
    assert np.all(np.isfinite(samples))
  # The returned parameters are the best epoch's (a copy that later steps did not donate away).
  assert np.all(np.isfinite(dist.log_prob(x[:10], context=one_hot[labels[:10]])))


def test_bad_contexts_are_rejected_by_name():
  dist = FlowDistribution.create(jax.random.key(0), VECTOR)
  x = jnp.zeros((4, 3))
  with pytest.raises(ValueError, match="context: log_prob of this conditional distribution needs"):
    dist.log_prob(x)
  with pytest.raises(ValueError, match=r"context: expected shape \(\.\.\., 2\)"):
    dist.log_prob(x, context=jnp.zeros((4, 5)))
  with pytest.raises(ValueError, match="does not broadcast"):
    dist.log_prob(x, context=jnp.zeros((3, 2)))
  with pytest.raises(TypeError, match="context: expected floating-point"):
    dist.log_prob(x, context=jnp.zeros((4, 2), jnp.int32))
  with pytest.raises(ValueError, match="context: a conditional distribution is fitted"):
    fit(jax.random.key(0), dist, np.zeros((10, 3), np.float32), progress=False)
  with pytest.raises(ValueError, match=r"context: expected floating-point contexts of shape \(10, 2\)"):
    fit(jax.random.key(0), dist, np.zeros((10, 3), np.float32), context=np.zeros((9, 2), np.float32))
  unconditional = FlowDistribution.create(jax.random.key(0), IResNetFlow(data_shape=(3,), stages=(), fc_blocks=1))
  with pytest.raises(ValueError, match="context: log_prob of an unconditional distribution"):
    unconditional.log_prob(x, context=jnp.zeros((4, 2)))
  with pytest.raises(ValueError, match="context_init: a conditional flow initialised on x_init"):
    FlowDistribution.create(jax.random.key(0), VECTOR, x_init=x)
  with pytest.raises(ValueError, match="prior: 'conditional' needs a conditional flow"):
    IResNetFlow(data_shape=(3,), stages=(), fc_blocks=1, prior="conditional").init(
        jax.random.key(0), x, estimator=ExactLogDet())
  # One context broadcast to every example equals that context repeated.
  c = jnp.array([0.5, -1.0])
  np.testing.assert_allclose(dist.log_prob(x, context=c), dist.log_prob(x, context=jnp.tile(c, (4, 1))), rtol=1e-6)
