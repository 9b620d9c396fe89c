"""The loop defaults: ``unroll=None`` unrolls blocks and series terms on CPU, except fully connected blocks with
the Neumann gradient, and rolls everything on other backends.

"Same program" is checked on the lowered StableHLO text: the default must lower to exactly what the explicit
option lowers to, so it runs at that option's speed (docs/benchmarks.md has the timings).
"""

import jax
import jax.numpy as jnp
import pytest

from iresflow.core import PowerSeries, Roulette, loops, power_series_logdet, roulette_logdet
from iresflow.models import IResNetFlow
from iresflow.nn import LipschitzConstraint, ResidualSpec


def _g(x):
  return 0.3 * jnp.tanh(x @ jnp.full((x.shape[-1], x.shape[-1]), 0.1))


def _lowered(fn, *args) -> str:
  return jax.jit(fn).lower(*args).as_text()


@pytest.mark.parametrize("backend, expected", [("cpu", True), ("gpu", False), ("cuda", False), ("tpu", False)])
def test_unroll_by_default_per_backend(backend, expected):
  assert loops.unroll_by_default(backend) is expected
  assert loops.unroll_by_default(backend, fully_connected_neumann=True) is False


def test_resolve_unroll():
  assert loops.resolve_unroll(True) is True and loops.resolve_unroll(False) is False
  assert loops.resolve_unroll(None) is loops.unroll_by_default()
  assert loops.resolve_unroll(None, fully_connected_neumann=True) is False
  assert loops.resolve_unroll(True, fully_connected_neumann=True) is True
  with pytest.raises(TypeError, match="unroll_blocks: expected True, False or None"):
    loops.resolve_unroll(1, "unroll_blocks")
  with pytest.raises(TypeError, match="unroll"):
    PowerSeries(unroll="yes")
  with pytest.raises(TypeError, match="unroll"):
    Roulette(unroll=0)
  with pytest.raises(TypeError, match="unroll_blocks"):
    IResNetFlow(data_shape=(2,), stages=(), fc_blocks=1, unroll_blocks="auto").init(
        jax.random.key(0), jnp.zeros((1, 2)))


def _series_text(unroll, gradient="backprop"):
  return _lowered(lambda key, x: power_series_logdet(key, _g, x, n_terms=4, gradient=gradient, unroll=unroll)[1],
                  jax.random.key(0), jnp.ones((3, 5)))


@pytest.mark.parametrize("gradient", ["backprop", "neumann"])
def test_series_default_is_the_explicit_choice_of_this_backend(gradient):
  """On vectors ``(batch, d)`` the Neumann gradient's series stays a loop; backprop's follows the backend."""
  expected = loops.unroll_by_default(fully_connected_neumann=gradient == "neumann")
  default = _series_text(None, gradient)
  assert default == _series_text(expected, gradient)
  assert default != _series_text(not expected, gradient)


def test_default_follows_the_backend(monkeypatch):
  """With the backend reported as a GPU, the default is the rolled loop."""
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert not loops.unroll_by_default()
  assert _series_text(None) == _series_text(False) != _series_text(True)


def test_roulette_unrolls_only_the_exact_terms():
  text = lambda unroll: _lowered(
      lambda key, x: roulette_logdet(key, _g, x, n_exact_terms=3, unroll=unroll)[1], jax.random.key(0),
      jnp.ones((3, 5)))
  assert text(None) == text(False) != text(True)  # vectors with the Neumann gradient: rolled by default
  assert "while" in text(True)  # the random number of extra terms still needs a loop
  key, x = jax.random.key(1), jax.random.normal(jax.random.key(2), (4, 5))
  for unroll in (True, False):  # same estimate either way
    value = roulette_logdet(key, _g, x, n_exact_terms=3, unroll=unroll)[1]
    reference = roulette_logdet(key, _g, x, n_exact_terms=3, unroll=not unroll)[1]
    assert jnp.allclose(value, reference, rtol=1e-5, atol=1e-6)


def test_flow_default_is_the_explicit_choice_of_this_backend():
  residual = ResidualSpec(hidden=8, constraint=LipschitzConstraint(coeff=0.8))
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 1))
  estimator = PowerSeries(n_terms=2, unroll=False)  # only the blocks' loop differs below
  texts = {}
  for unroll in (None, True, False):
    model = IResNetFlow(data_shape=(4, 4, 1), stages=(3,), residual=residual, unroll_blocks=unroll)
    variables = jax.eval_shape(lambda k, x: model.init(k, x, estimator=estimator), jax.random.key(1), x)
    texts[unroll] = _lowered(lambda v, x: model.apply(v, x, estimator=estimator, rngs={"logdet": jax.random.key(0)}),
                             variables, x)
  assert texts[None] == texts[loops.unroll_by_default()] != texts[not loops.unroll_by_default()]


def test_flow_inverse_keeps_the_scan_by_default():
  from iresflow.nn import FixedPointSolver
  residual = ResidualSpec(hidden=8, constraint=LipschitzConstraint(coeff=0.8))
  z = jax.random.normal(jax.random.key(0), (2, 16))
  texts = {}
  for unroll in (None, True, False):
    model = IResNetFlow(data_shape=(4, 4, 1), stages=(3,), residual=residual, unroll_blocks=unroll)
    variables = jax.eval_shape(lambda k, x: model.init(k, x, estimator=PowerSeries(n_terms=1)), jax.random.key(1),
                               jnp.zeros((2, 4, 4, 1)))
    texts[unroll] = _lowered(lambda v, z: model.apply(v, z, solver=FixedPointSolver(), method=model.inverse,
                                                      mutable=["inverse_info"])[0], variables, z)
  assert texts[None] == texts[False] != texts[True]


@pytest.mark.parametrize("estimator", [PowerSeries(n_terms=2, unroll=False, gradient="neumann"),
                                       Roulette(n_exact_terms=1, unroll=False)], ids=["series-neumann", "roulette"])
def test_fully_connected_blocks_with_the_neumann_gradient_are_scanned_by_default(estimator):
  """A vector flow trained with the Neumann gradient lowers to the scanned program by default (on CPU
  faster to compile and to run); with backprop through the series it follows the backend."""
  residual = ResidualSpec(hidden=8, constraint=LipschitzConstraint(coeff=0.8))
  x = jax.random.normal(jax.random.key(0), (2, 5))

  def texts(estimator):
    out = {}
    for unroll in (None, True, False):
      model = IResNetFlow(data_shape=(5,), stages=(), fc_blocks=3, fc_residual=residual, unroll_blocks=unroll)
      variables = jax.eval_shape(lambda k, x: model.init(k, x, estimator=estimator), jax.random.key(1), x)
      out[unroll] = _lowered(lambda v, x: model.apply(v, x, estimator=estimator,
                                                      rngs={"logdet": jax.random.key(0)}), variables, x)
    return out

  neumann = texts(estimator)
  assert neumann[None] == neumann[False] != neumann[True]
  backprop = texts(PowerSeries(n_terms=2, unroll=False, gradient="backprop"))
  assert backprop[None] == backprop[loops.unroll_by_default()] != backprop[not loops.unroll_by_default()]


def test_initialisation_keeps_the_blocks_rolled():
  """``init`` runs once: it lowers to the same scanned program whatever ``unroll_blocks`` says (an unrolled init
  only cost compile time), and both give the same variables."""
  x = jax.random.normal(jax.random.key(0), (8, 2))
  flow = lambda unroll: IResNetFlow(data_shape=(2,), stages=(), fc_blocks=3, unroll_blocks=unroll,
                                    fc_residual=ResidualSpec(hidden=8, constraint=LipschitzConstraint(coeff=0.9)))
  programs, variables = {}, {}
  for unroll in (True, False):
    init = lambda key, x, m=flow(unroll): m.init({"params": key, "logdet": key}, x, estimator=PowerSeries(n_terms=2))
    programs[unroll] = _lowered(init, jax.random.key(1), x)
    variables[unroll] = jax.jit(init)(jax.random.key(1), x)
  assert programs[True] == programs[False]
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), variables[True], variables[False]))
  # Applying the model still follows unroll_blocks.
  apply = lambda unroll: _lowered(lambda v, x: flow(unroll).apply(v, x, estimator=PowerSeries(n_terms=2),
                                                                  rngs={"logdet": jax.random.key(2)}),
                                  variables[False], x)
  assert apply(True) != apply(False)
