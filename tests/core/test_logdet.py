"""Algorithm 2 and eq. (4)-(5): power-series log-det vs exact computation, Lemma 7 and Theorem 3."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iresflow.core import logdet
from tests import helpers


def _problem(kind, lipschitz, seed=0):
  key = jax.random.key(seed)
  if kind == "dense":
    g = helpers.contractive_mlp(key, 4, 16, lipschitz)
    x = jax.random.normal(jax.random.key(seed + 1), (3, 4))
  else:
    g = helpers.contractive_conv_net(key, (3, 3, 2), 4, lipschitz)
    x = jax.random.normal(jax.random.key(seed + 1), (3, 3, 3, 2))
  return g, x


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
def test_estimate_matches_exact_series_and_exact_logdet(kind, probe):
  lipschitz, n_terms, n_probes = 0.7, 8, 20_000
  g, x = _problem(kind, lipschitz)
  gx, estimate = jax.jit(lambda x: logdet.power_series_logdet(
      jax.random.key(2), g, x, n_terms=n_terms, n_probes=n_probes, probe=probe))(x)
  np.testing.assert_allclose(gx, g(x), rtol=1e-6)
  series = logdet.exact_series(g, x, n_terms)
  _, exact = logdet.exact_logdet(g, x)
  # Statistical tolerance: 5 standard errors of the Hutchinson mean, from the per-probe spread.
  _, single = jax.vmap(lambda k: logdet.power_series_logdet(k, g, x, n_terms=n_terms))(
      jax.random.split(jax.random.key(3), 2000))
  stderr = np.asarray(jnp.std(single, axis=0)) / math.sqrt(n_probes)
  np.testing.assert_array_less(np.abs(np.asarray(estimate - series)), 5 * stderr + 1e-5)
  d = math.prod(x.shape[1:])
  bound = logdet.series_truncation_bound(lipschitz, d, n_terms)
  np.testing.assert_array_less(np.abs(np.asarray(series - exact)), bound + 1e-5)
  np.testing.assert_array_less(np.abs(np.asarray(estimate - exact)), bound + 5 * stderr + 1e-5)


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("lipschitz", [0.5, 0.9, 0.99])
def test_exact_logdet_lies_within_lemma_7_bounds(kind, lipschitz):
  g, x = _problem(kind, lipschitz, seed=4)
  x = 3.0 * x
  _, exact = logdet.exact_logdet(g, x)
  lower, upper = logdet.logdet_bounds(lipschitz, math.prod(x.shape[1:]))
  assert np.all(np.asarray(exact) >= lower) and np.all(np.asarray(exact) <= upper)


def test_exact_logdet_matches_slogdet_of_the_whole_map():
  g, x = _problem("conv", 0.9)
  _, value = logdet.exact_logdet(g, x)
  for i in range(x.shape[0]):
    jac = jax.jacfwd(lambda z: (z + g(z[None])[0]))(x[i]).reshape(18, 18)
    sign, expected = np.linalg.slogdet(np.asarray(jac, np.float64))
    assert sign > 0  # Lemma 6
    assert float(value[i]) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("transform", ["residual", "cayley"])
def test_exact_logdet_runs_lapack_on_one_matrix_at_a_time(transform):
  """On XLA:CPU a batched LAPACK call (``num_batch_dims`` > 0) waits on the intra-op thread pool from
  one of its threads; two such calls at once on a 2-thread pool hung this suite. ``exact_logdet``'s
  value and gradient programs call LAPACK on single matrices only (a loop over examples)."""
  g, x = _problem("dense", 0.5)
  value = lambda x: logdet.exact_logdet(g, x, transform=transform)[1]
  for fn in (value, jax.grad(lambda x: value(x).sum())):
    calls = [line for line in jax.jit(fn).lower(x).as_text().splitlines() if "custom_call @lapack_" in line]
    assert calls, "no LAPACK call found: the check below would pass vacuously"
    for line in calls:
      assert 'num_batch_dims = "0"' in line, line[:200]


def test_truncation_error_shrinks_as_theorem_3_says():
  g, x = _problem("dense", 0.9, seed=7)
  _, exact = logdet.exact_logdet(g, x)
  errors = []
  for n in (1, 2, 5, 10, 20, 40):
    error = float(jnp.max(jnp.abs(logdet.exact_series(g, x, n) - exact)))
    assert error <= logdet.series_truncation_bound(0.9, 4, n) + 1e-5
    errors.append(error)
  assert errors[-1] < 1e-3 < errors[0]


def test_theorem_3_worked_values():
  assert logdet.series_truncation_bound(0.9, 1, 5) == pytest.approx(0.4725, abs=5e-4)
  assert logdet.series_truncation_bound(0.9, 1, 10) == pytest.approx(0.1838, abs=5e-4)
  assert logdet.series_truncation_bound(0.9, 1, 20) == pytest.approx(0.0392, abs=5e-4)
  assert logdet.series_truncation_bound(0.5, 1, 5) == pytest.approx(0.0046, abs=5e-5)
  assert logdet.series_truncation_bound(0.5, 10, 5) == pytest.approx(0.046, abs=5e-4)
  assert logdet.series_truncation_bound(0.0, 3, 2) == 0.0


def test_lemma_7_sums_over_blocks():
  lower, upper = logdet.logdet_bounds([0.5, 0.9], 2)
  assert lower == pytest.approx(2 * (math.log(0.5) + math.log(0.1)))
  assert upper == pytest.approx(2 * (math.log(1.5) + math.log(1.9)))


def test_per_example_results_independent_of_batch_composition():
  g, x = _problem("conv", 0.9)
  key = jax.random.key(8)
  _, whole = logdet.power_series_logdet(key, g, x, n_terms=4, n_probes=3)
  _, reordered = logdet.power_series_logdet(key, g, x[::-1], n_terms=4, n_probes=3)
  _, exact_whole = logdet.exact_logdet(g, x)
  _, exact_first = logdet.exact_logdet(g, x[:1])
  np.testing.assert_allclose(exact_first[0], exact_whole[0], rtol=1e-6)
  # With a different batch the probes differ, but each estimate stays an estimate of its own example:
  # averaged over many keys both orders converge to the same per-example series.
  keys = jax.random.split(key, 4000)
  mean = lambda xs: jnp.mean(jax.vmap(lambda k: logdet.power_series_logdet(k, g, xs, n_terms=4)[1])(keys), 0)
  np.testing.assert_allclose(mean(x), mean(x[::-1])[::-1], atol=0.1)
  np.testing.assert_allclose(mean(x), logdet.exact_series(g, x, 4), atol=0.1)
  assert whole.shape == reordered.shape == (3,)



@pytest.mark.parametrize("bad", [0, 2])
def test_a_nan_example_leaves_the_other_examples_estimates_alone(bad):
  # Same probes with and without the NaN (the key fixes them per position), so the others must match exactly.
  g, x = _problem("dense", 0.8)
  x = jnp.concatenate([x, -x[:1]])  # 4 examples
  dirty = x.at[bad].set(jnp.nan)
  estimators = {
      "series-backprop": lambda k, z, u: logdet.power_series_logdet(k, g, z, n_terms=4, unroll=u),
      "series-neumann": lambda k, z, u: logdet.power_series_logdet(k, g, z, n_terms=4, gradient="neumann", unroll=u),
      "roulette": lambda k, z, u: logdet.roulette_logdet(k, g, z, unroll=u),
  }
  for name, estimate in estimators.items():
    for unroll in (True, False):
      run = jax.jit(lambda z: estimate(jax.random.key(3), z, unroll)[1])
      clean, with_nan = np.asarray(run(x)), np.asarray(run(dirty))
      assert np.isnan(with_nan[bad]), name
      np.testing.assert_allclose(np.delete(with_nan, bad), np.delete(clean, bad), rtol=1e-6, err_msg=name)

def test_gradients_through_the_estimator():
  lipschitz = 0.5
  key = jax.random.key(9)
  w = helpers.contractive_mlp(key, 3, 3, lipschitz)  # only used for a starting point
  x = jax.random.normal(jax.random.key(10), (2, 3))
  a = 0.3 * jnp.eye(3) + 0.1 * jax.random.normal(jax.random.key(11), (3, 3))

  def series_loss(a):
    g = lambda z: jnp.tanh(z @ a)
    return jnp.sum(logdet.power_series_logdet(jax.random.key(0), g, x, n_terms=30, n_probes=4000, unroll=False)[1])

  def exact_loss(a):
    g = lambda z: jnp.tanh(z @ a)
    return jnp.sum(logdet.exact_logdet(g, x)[1])

  grad_series = jax.jit(jax.grad(series_loss))(a)
  grad_exact = jax.grad(exact_loss)(a)
  np.testing.assert_allclose(grad_series, grad_exact, atol=0.1)
  del w


def test_terms_run_under_a_loop_primitive_unless_unrolled():
  g, x = _problem("dense", 0.5)
  program = lambda n, unroll: str(jax.make_jaxpr(
      lambda x: logdet.power_series_logdet(jax.random.key(0), g, x, n_terms=n, unroll=unroll))(x))
  text = program(50, False)
  assert "while" in text or "scan" in text
  # 50 terms but one traced copy of the backward pass: the program does not grow with n_terms.
  assert len(text) < 1.2 * len(program(5, False))
  # Unrolled, every term is traced: no loop, and the program grows with n_terms.
  assert "while" not in program(5, True) and "scan" not in program(5, True)
  assert len(program(10, True)) > 1.5 * len(program(5, True))


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(n_terms=0), ValueError, "n_terms"),
        (dict(n_terms=3, n_probes=0), ValueError, "n_probes"),
        (dict(n_terms=3, probe="uniform"), ValueError, "probe"),
        (dict(n_terms=3, x=jnp.ones(4)), ValueError, "x"),
        (dict(n_terms=3, x=jnp.ones((2, 4), jnp.int32)), TypeError, "x"),
    ],
)
def test_bad_input_is_named(kwargs, error, match):
  kwargs.setdefault("x", jnp.ones((2, 4)))
  with pytest.raises(error, match=match):
    logdet.power_series_logdet(jax.random.key(0), lambda z: 0.5 * z, **kwargs)


def test_bound_functions_reject_bad_lipschitz():
  with pytest.raises(ValueError, match="lipschitz"):
    logdet.series_truncation_bound(1.0, 2, 3)
  with pytest.raises(ValueError, match="lipschitz"):
    logdet.logdet_bounds([0.5, 1.2], 2)
