"""jit_run_once: the numbers of jax.jit, compiled with the run-once options on CPU only."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iresflow.core import compilation, jit_run_once
from iresflow.models import IResNetFlow
from iresflow.nn import PowerSeries, ResidualSpec


@pytest.mark.default_xla  # in the first pass both compile fast, so only the second compares two settings
def test_an_initialisation_compiled_once_gives_jax_jits_parameters():
  model = IResNetFlow(data_shape=(3,), stages=(), fc_blocks=2, fc_residual=ResidualSpec(hidden=8), prior="learned")
  x = jax.random.normal(jax.random.key(0), (5, 3))
  init = lambda key, x: model.init(key, x, estimator=PowerSeries())
  fast, plain = jit_run_once(init)(jax.random.key(1), x), jax.jit(init)(jax.random.key(1), x)
  # Parameters to float32 rounding (the random bits are integer arithmetic; erfinv and ActNorm's
  # statistics round differently at another optimisation level).
  for a, b in zip(jax.tree.leaves(fast["params"]), jax.tree.leaves(plain["params"])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_the_run_once_options_go_to_jax_jit_on_cpu_only(monkeypatch):
  calls = []
  monkeypatch.setattr(compilation.jax, "jit", lambda fun, **kwargs: calls.append(kwargs) or fun)
  for backend, expected in (("cpu", compilation.RUN_ONCE_CPU_COMPILER_OPTIONS), ("gpu", None)):
    monkeypatch.setattr(compilation.jax, "default_backend", lambda backend=backend: backend)
    jit_run_once(jnp.sin, donate_argnums=0)
    assert calls[-1] == {"compiler_options": expected, "donate_argnums": 0}, backend


def test_static_arguments_pass_through_and_compiler_options_are_refused():
  double = jit_run_once(lambda x, n: x * n, static_argnums=1)
  assert float(double(jnp.float32(2.0), 3)) == 6.0
  with pytest.raises(TypeError, match="compiler_options"):
    jit_run_once(lambda x: x, compiler_options={"xla_backend_optimization_level": 1})
