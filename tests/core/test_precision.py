"""Matmul precision of the computations that must be accurate: the inverse, the norm estimate, the exact log-det.

CPUs compute every precision setting in float32, so the numbers cannot tell the settings apart here;
the tests read the precision that each traced matmul and convolution carries in the lowered program
(the setting the GPU or TPU compiler receives). docs/vs_normflows_gpu.md has the measured effect on a GPU.
"""

import re

import jax
import jax.numpy as jnp
import pytest

from iresflow.core import fixed_point, logdet, precision
from iresflow.models import IResNetFlow
from iresflow.nn import InverseOptions
from tests import helpers


def _precisions(lowered_text: str) -> list[str]:
  """The precision of every dot_general and convolution in a StableHLO module, in order."""
  found = []
  for line in lowered_text.splitlines():
    if "stablehlo.dot_general" in line:
      found.append(re.search(r"precision = \[(\w+), \w+\]", line).group(1))
    elif "stablehlo.convolution" in line:
      found.append(re.search(r"#stablehlo<precision (\w+)>", line).group(1))
  return found


def _mlp_and_input():
  g = helpers.contractive_mlp(jax.random.key(0), 4, 8, 0.5)
  return g, jax.random.normal(jax.random.key(1), (3, 4))


def test_fixed_point_inverse_runs_g_at_highest_precision_forward_and_backward():
  g, y = _mlp_and_input()
  forward = _precisions(jax.jit(lambda y: fixed_point.fixed_point_inverse(g, y)[0]).lower(y).as_text())
  assert forward and set(forward) == {"HIGHEST"}
  loss = lambda y: jnp.sum(fixed_point.fixed_point_inverse(g, y)[0] ** 2)
  backward = _precisions(jax.jit(jax.grad(loss)).lower(y).as_text())
  assert len(backward) > len(forward) and set(backward) == {"HIGHEST"}  # the adjoint solve too


def test_fixed_point_inverse_precision_none_keeps_the_ambient_default():
  g, y = _mlp_and_input()
  inverse = jax.jit(lambda y: fixed_point.fixed_point_inverse(g, y, precision=None)[0])
  assert set(_precisions(inverse.lower(y).as_text())) == {"DEFAULT"}
  with jax.default_matmul_precision("bfloat16"):
    lowered = jax.jit(lambda y: fixed_point.fixed_point_inverse(g, y, precision=None)[0]).lower(y)
  assert "HIGHEST" not in _precisions(lowered.as_text())


def test_exact_logdet_differentiates_at_highest_precision():
  g, x = _mlp_and_input()
  found = _precisions(jax.jit(lambda x: logdet.exact_logdet(g, x)[1]).lower(x).as_text())
  assert found and set(found) == {"HIGHEST"}


def test_flow_sampling_is_highest_and_training_forward_keeps_the_default():
  """Image flow: the sampler's convolutions run at HIGHEST (with ``precision=None``, those of ``g`` in
  the loop run at the default); the training forward pass stays at JAX's default except the
  spectral-norm estimates (power iteration, and ``sigma = ||W u||`` in evaluation), at HIGHEST."""
  model = IResNetFlow(data_shape=(4, 4, 1), stages=(2,), hidden=4, norm_estimator="power",
                      n_power_iterations=1, n_init_power_iterations=2)
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 1))
  variables = model.init(jax.random.key(1), x)
  sample = lambda key: model.apply(variables, 2, InverseOptions(), method=model.sample, rngs={"sample": key})
  sampled = _precisions(jax.jit(sample).lower(jax.random.key(2)).as_text())
  assert sampled and set(sampled) == {"HIGHEST"}
  fast = lambda key: model.apply(variables, 2, InverseOptions(precision=None), method=model.sample,
                                 rngs={"sample": key})
  assert "DEFAULT" in _precisions(jax.jit(fast).lower(jax.random.key(2)).as_text())  # g in the loop

  train_forward = lambda v, key: model.apply(v, x, rngs={"logdet": key}, mutable=["spectral"])
  found = _precisions(jax.jit(train_forward).lower(variables, jax.random.key(3)).as_text())
  assert "DEFAULT" in found and "HIGHEST" in found  # g at the default; the norm estimates at HIGHEST


@pytest.mark.parametrize("bad", ["fp32", "HIGHEST", 32])
def test_unknown_precision_is_rejected_by_name(bad):
  with pytest.raises(ValueError, match="precision: expected None"):
    InverseOptions(precision=bad)
  with pytest.raises(ValueError, match="precision: expected None"):
    fixed_point.fixed_point_inverse(lambda x: 0.5 * x, jnp.ones((1, 2)), precision=bad)
  with pytest.raises(ValueError, match="precision: expected None"):
    precision.with_matmul_precision(lambda x: x, bad)
