"""The Glow-style baseline is a correct flow: exact log-det against jax.jacfwd + slogdet, and it inverts."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from iresflow.baselines import GlowFlow


def test_glow_log_prob_is_exact_and_sampling_inverts():
  model = GlowFlow(n_steps=3, hidden=8)
  x = jax.random.normal(jax.random.key(0), (5, 2)) * 2
  variables = model.init(jax.random.key(1), x)
  # Perturb the zero-initialised coupling outputs so every layer does something.
  variables = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(2), p.shape), variables)

  def forward(v):  # the flow's map x -> z, through the inverse of sample()
    return model.apply(variables, v[None], method=lambda m, y: _forward(m, y))[0]

  def _forward(m, y):
    for norm, mixing, coupling in zip(m.norms, m.mixings, m.couplings):
      y, _ = norm.forward_and_log_det(y)
      y, _ = mixing(y)
      y, _ = coupling(y)
    return y

  z = jax.vmap(forward)(x)
  log_det = np.linalg.slogdet(np.asarray(jax.vmap(jax.jacfwd(forward))(x), np.float64))[1]
  expected = log_det - 0.5 * jnp.sum(z**2, -1) - math.log(2 * math.pi)
  np.testing.assert_allclose(model.apply(variables, x), expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(model.apply(variables, z, method=model.sample), x, atol=1e-4)


def test_glow_image_flow_log_prob_is_exact():
  """For x = sample(z): log p(x) = log N(z) - log|det d sample / dz| (jax.jacfwd + slogdet, 64-D)."""
  from iresflow.baselines import GlowImageFlow

  model = GlowImageFlow(stages=(1, 1), hidden=4)
  variables = model.init(jax.random.key(1), jax.random.uniform(jax.random.key(0), (3, 8, 8, 1)) - 0.5)
  variables = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(2), p.shape), variables)
  z = jax.random.normal(jax.random.key(3), (3, 64))
  sample = lambda zi: model.apply(variables, zi[None], (8, 8, 1), method=model.sample)[0].reshape(-1)
  x = jax.vmap(sample)(z).reshape(3, 8, 8, 1)
  jacobians = np.asarray(jax.vmap(jax.jacfwd(sample))(z), np.float64)
  expected = -np.linalg.slogdet(jacobians)[1] - 0.5 * jnp.sum(z**2, -1) - 32 * math.log(2 * math.pi)
  np.testing.assert_allclose(model.apply(variables, x), expected, rtol=1e-4, atol=1e-3)


def test_matching_width_is_the_brute_force_closest():
  from iresflow.baselines import matching_width, parameter_count

  x = jnp.zeros((4, 6))
  counts = {h: parameter_count(jax.eval_shape(GlowFlow(3, h).init, jax.random.key(0), x)["params"])
            for h in range(4, 65)}
  for target in (counts[9] + 1, counts[17] - 2, 5_000, 1):
    brute = min(counts, key=lambda h: abs(counts[h] - target))
    assert matching_width(lambda h: GlowFlow(3, h), target, x, low=4, high=64) == brute
