"""``remat=True``: the estimators keep only their input (and the Neumann vector) for the backward pass.

Checked: the same values and gradients as without it, for any cotangent (also per-example weights, which a
precomputed log-det gradient, as in Residual Flows' memory-efficient estimator, could not honour); the series
is not recomputed in the backward pass with the Neumann gradient (FLOPs of the compiled step); the compiled
training step of a flow needs less temporary memory; and an unrolled stage does not keep every block's first
series product alive (the ordering ties on the probes and the saved Neumann vector).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iresflow.core import PowerSeries, Roulette

ESTIMATORS = {
    "series-backprop": lambda remat, unroll=None, n=5: PowerSeries(n_terms=n, remat=remat, unroll=unroll),
    "series-neumann": lambda remat, unroll=None, n=5: PowerSeries(n_terms=n, gradient="neumann", remat=remat,
                                                                  unroll=unroll),
    "roulette": lambda remat, unroll=None, n=5: Roulette(n_exact_terms=n, remat=remat, unroll=unroll),
}


def _params(seed=0, dim=6, hidden=16):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return {"w1": 0.2 * jax.random.normal(k1, (dim, hidden)), "w2": 0.2 * jax.random.normal(k2, (hidden, dim))}


def _g(params):
  return lambda x: jnp.tanh(x @ params["w1"]) @ params["w2"]


def _loss(estimator, params, x, weights, key=jax.random.key(3)):
  """Non-uniform cotangents on both outputs: per-example weights on the log-det, a direction on g(x)."""
  gx, value = estimator(key, _g(params), x)
  return jnp.sum(weights * value) + jnp.sum(jnp.sin(gx))


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@pytest.mark.parametrize("unroll", [True, False])
def test_same_values_and_gradients(name, unroll):
  params, x = _params(), jax.random.normal(jax.random.key(1), (4, 6))
  weights = jnp.array([1.0, -2.0, 0.5, 3.0])
  results = {}
  for remat in (False, True):
    estimator = ESTIMATORS[name](remat, unroll)
    value = jax.jit(lambda p, x: estimator(jax.random.key(3), _g(p), x))(params, x)
    grads = jax.jit(jax.grad(lambda p, x: _loss(estimator, p, x, weights), argnums=(0, 1)))(params, x)
    results[remat] = (value, grads)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6), results[False], results[True])


def _step_flops(estimator, params, x):
  weights = jnp.ones((x.shape[0],))
  step = jax.jit(jax.grad(lambda p: _loss(estimator, p, x, weights)))
  analysis = step.lower(params).compile().cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return float(analysis["flops"])


@pytest.mark.parametrize("name", ["series-neumann", "roulette"])
def test_neumann_series_is_not_recomputed_in_the_backward_pass(name):
  """The series' cost (FLOPs of 12 terms minus 4, all unrolled) is paid once with remat, as without it."""
  params, x = _params(dim=8, hidden=64), jax.random.normal(jax.random.key(1), (16, 8))
  flops = {(remat, n): _step_flops(ESTIMATORS[name](remat, True, n), params, x)
           for remat in (False, True) for n in (4, 12)}
  series_cost = flops[False, 12] - flops[False, 4]
  assert series_cost > 0
  # Recomputing the series would double this difference; element-wise work is fused differently.
  assert 0.8 * series_cost < flops[True, 12] - flops[True, 4] < 1.3 * series_cost
  # Recomputing g's forward and the surrogate's vector-Jacobian product: about two terms' worth here.
  assert flops[False, 4] < flops[True, 4] < flops[False, 4] + series_cost / 2


@pytest.mark.parametrize("gradient", ["backprop", "neumann"])
def test_flow_training_step_needs_less_memory(gradient):
  from iresflow.models import IResNetFlow
  from iresflow.nn import LipschitzConstraint, ResidualSpec

  model = IResNetFlow(data_shape=(8, 8, 1), stages=(2,),
                      residual=ResidualSpec(hidden=32, constraint=LipschitzConstraint(coeff=0.9)))
  x = jax.random.uniform(jax.random.key(0), (16, 8, 8, 1)) - 0.5
  variables = jax.jit(lambda key, x: model.init(key, x, estimator=PowerSeries(n_terms=1)))(jax.random.key(1), x)
  temp_bytes = {}
  for remat in (False, True):
    estimator = PowerSeries(n_terms=4, gradient=gradient, remat=remat)

    def loss(params):
      log_prob, _ = model.apply({**variables, "params": params}, x, estimator=estimator,
                                rngs={"logdet": jax.random.key(2)}, mutable=["spectral"])
      return -jnp.mean(log_prob)

    compiled = jax.jit(jax.grad(loss)).lower(variables["params"]).compile()
    temp_bytes[remat] = compiled.memory_analysis().temp_size_in_bytes
  assert temp_bytes[True] < temp_bytes[False]


def test_unrolled_blocks_do_not_keep_each_others_series_vectors():
  """An unrolled stage's step memory grows by less than one hidden-width activation per extra block.

  The probes (and, in the backward pass, the saved Neumann vector) do not depend on a block's input; untied,
  XLA:CPU ran every block's first vector-Jacobian product, an activation of the hidden width, long before
  the block and kept it until the block ran: 1.1 such arrays per block in the loss, 1.4 in its gradient
  with the Neumann series, on this pre-activation model (0.0 and 0.4 tied). Backprop through the series
  keeps every block's activations by design, so only the loss is checked for it (the same forward pass).
  """
  from iresflow.models import IResNetFlow
  from iresflow.nn import LipschitzConstraint, ResidualSpec

  batch, size, hidden = 16, 16, 64
  estimator = PowerSeries(n_terms=3, gradient="neumann", unroll=True)
  residual = ResidualSpec(hidden=hidden, kernel_sizes=(3, 1, 3), activation="lipswish", preactivation=True,
                          constraint=LipschitzConstraint(coeff=0.9, n_power_iterations=1))
  x = jax.random.uniform(jax.random.key(0), (batch, size, size, 1)) - 0.5
  temp_bytes = {}
  for blocks in (2, 4):
    model = IResNetFlow(data_shape=(size, size, 1), stages=(blocks,), initial_squeeze=False, actnorm=False,
                        unroll_blocks=True, residual=residual, prior="normal")
    variables = jax.jit(lambda key, x: model.init(key, x, estimator=PowerSeries(n_terms=1)))(jax.random.key(1), x)

    def loss(params):
      log_prob, _ = model.apply({**variables, "params": params}, x, estimator=estimator,
                                rngs={"logdet": jax.random.key(2)}, mutable=["spectral"])
      return -jnp.mean(log_prob)

    temp_bytes[blocks] = [jax.jit(f).lower(variables["params"]).compile().memory_analysis().temp_size_in_bytes
                          for f in (loss, jax.grad(loss))]
  hidden_activation_bytes = batch * size * size * hidden * 4
  per_block = [(large - small) / 2 / hidden_activation_bytes for small, large in zip(temp_bytes[2], temp_bytes[4])]
  assert per_block[0] < 0.5, per_block  # the loss
  assert per_block[1] < 1.0, per_block  # its gradient (the backward pass recomputes each block's g)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_the_program_without_the_cpu_work_arounds_gives_the_same_values(name, monkeypatch):
  """On backends where the ordering ties and the one-at-a-time LU were not measured they are left out; the
  values and gradients are those of the CPU program (the ties add zeros), with and without remat."""
  from iresflow.core import ExactLogDet, _scheduling

  params, x = _params(), jax.random.normal(jax.random.key(1), (4, 6))
  weights = jnp.array([1.0, -2.0, 0.5, 3.0])

  def run(remat):
    estimator = ESTIMATORS[name](remat, True)
    programs.append(str(jax.make_jaxpr(lambda p, x: estimator(jax.random.key(3), _g(p), x))(params, x)))
    value = jax.jit(lambda p, x: estimator(jax.random.key(3), _g(p), x))(params, x)
    grads = jax.jit(jax.grad(lambda p, x: _loss(estimator, p, x, weights), argnums=(0, 1)))(params, x)
    exact = jax.jit(lambda p, x: ExactLogDet()(None, _g(p), x))(params, x)
    return value, grads, exact

  assert _scheduling.work_arounds_apply()  # the suite runs on CPU
  programs = []
  with_ties = [run(remat) for remat in (False, True)]
  monkeypatch.setattr(_scheduling, "work_arounds_apply", lambda: False)
  jax.clear_caches()
  without = [run(remat) for remat in (False, True)]
  assert programs[0] != programs[2] and programs[1] != programs[3]  # the ties were left out
  for a, b in zip(with_ties, without):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-6), a, b)
