"""Matmul precision of the computations that must be accurate: the inverse, the norm estimate, the exact log-det.

CPUs compute every precision setting in float32, so the numbers cannot tell the settings apart here;
the tests read the precision that each traced matmul and convolution carries in the lowered program
(the setting the GPU or TPU compiler receives). docs/vs_normflows_gpu.md has the measured effect on a GPU.
"""

import collections
import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from iresflow import certificate
from iresflow.core import Roulette, fixed_point, logdet, precision
from iresflow.models import IResNetFlow
from iresflow.nn import INVERSE_INFO, FixedPointSolver, LipschitzConstraint, PowerSeries, ResidualSpec
from iresflow.train import TrainState, default_config, setup
from iresflow.train.steps import make_eval_step, make_train_step
from tests import helpers


def _matmul_settings(lowered_text: str) -> list[tuple[str, str]]:
  """``(precision, operand dtype)`` of every dot_general and convolution in a StableHLO module, in order."""
  found = []
  for line in lowered_text.splitlines():
    if "stablehlo.dot_general" in line or "stablehlo.convolution" in line:
      setting = re.search(r"precision = \[(\w+), \w+\]|#stablehlo<precision (\w+)>", line)
      dtypes = set(re.findall(r"tensor<[^>]*x(bf16|f16|f32)>", line))
      assert len(dtypes) == 1, line  # no mixed-dtype matmuls
      found.append((setting.group(1) or setting.group(2), dtypes.pop()))
  return found


def _precisions(lowered_text: str) -> list[str]:
  """The precision of every dot_general and convolution in a StableHLO module, in order."""
  return [precision for precision, _ in _matmul_settings(lowered_text)]


def _precisions_and_dtypes(lowered_text: str) -> collections.Counter:
  """How many dot_generals and convolutions of a StableHLO module run at each (precision, operand dtype)."""
  return collections.Counter(_matmul_settings(lowered_text))


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
  model = IResNetFlow(data_shape=(4, 4, 1), stages=(2,), residual=ResidualSpec(
      hidden=4, constraint=LipschitzConstraint(norm_estimator="power", n_power_iterations=1,
                                               n_init_power_iterations=2)))
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 1))
  variables = helpers.jit_init(model, jax.random.key(1), x, estimator=PowerSeries())
  sample = lambda key: model.apply(variables, 2, solver=FixedPointSolver(), method=model.sample,
                                   rngs={"sample": key}, mutable=[INVERSE_INFO])
  sampled = _precisions(jax.jit(sample).lower(jax.random.key(2)).as_text())
  assert sampled and set(sampled) == {"HIGHEST"}
  fast = lambda key: model.apply(variables, 2, solver=FixedPointSolver(precision=None), method=model.sample,
                                 rngs={"sample": key})
  assert "DEFAULT" in _precisions(jax.jit(fast).lower(jax.random.key(2)).as_text())  # g in the loop

  train_forward = lambda v, key: model.apply(v, x, estimator=PowerSeries(), rngs={"logdet": key},
                                             mutable=["spectral"])
  found = _precisions(jax.jit(train_forward).lower(variables, jax.random.key(3)).as_text())
  assert "DEFAULT" in found and "HIGHEST" in found  # g at the default; the norm estimates at HIGHEST


def test_certificate_reads_the_kernels_in_use_at_highest_precision():
  """The certificate's layers come from the blocks' own code, with every norm estimate at HIGHEST
  (with JAX's default TF32/bfloat16 matmuls, the certified kernel could differ from the one in use)."""
  model = IResNetFlow(data_shape=(4, 4, 1), stages=(1,), fc_blocks=1,
                      residual=ResidualSpec(hidden=4), fc_residual=ResidualSpec(hidden=8))
  variables = helpers.jit_init(model, jax.random.key(1), jax.random.normal(jax.random.key(0), (2, 4, 4, 1)),
                               estimator=PowerSeries())
  for view in model.blocks(variables):
    read = lambda v, view=view: certificate.normalized_layers(view._replace(variables=v))
    found = _precisions(jax.jit(read).lower(view.variables).as_text())
    assert found and set(found) == {"HIGHEST"}
    # ... and they are exactly the kernels the block's forward pass multiplies with.
    used = view.block.apply(view.variables, view.input_shape, method=view.block.normalized_layers)
    for a, b in zip(jax.tree.leaves(read(view.variables)), jax.tree.leaves(used)):
      np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", ["fp32", "HIGHEST", 32])
def test_unknown_precision_is_rejected_by_name(bad):
  with pytest.raises(ValueError, match="precision: expected None"):
    FixedPointSolver(precision=bad)
  with pytest.raises(ValueError, match="precision: expected None"):
    fixed_point.fixed_point_inverse(lambda x: 0.5 * x, jnp.ones((1, 2)), precision=bad)
  with pytest.raises(ValueError, match="precision: expected None"):
    precision.with_matmul_precision(lambda x: x, bad)


def _small_image_flow():
  model = IResNetFlow(data_shape=(4, 4, 1), stages=(2,), residual=ResidualSpec(hidden=4), fc_blocks=1,
                      fc_residual=ResidualSpec(hidden=8))
  x = jax.random.normal(jax.random.key(0), (4, 4, 4, 1))
  return model, helpers.jit_init(model, jax.random.key(1), x, estimator=PowerSeries()), x


@pytest.mark.parametrize("policy, expected", [
    (dict(), ("DEFAULT", "f32")),
    (dict(precision="tensorfloat32"), ("HIGH", "f32")),
    (dict(compute_dtype="bfloat16"), ("DEFAULT", "bf16")),
    # unroll=True: the fully connected block's Neumann series is a loop by default, one body in the text.
    (dict(gradient="neumann", precision="bfloat16", compute_dtype="bfloat16", unroll=True), ("DEFAULT", "bf16")),
], ids=["default", "tf32", "bf16_activations", "neumann_bf16"])
def test_training_step_runs_g_and_series_by_the_policy_and_norm_estimates_at_highest(policy, expected):
  """The whole jitted train step (forward, series, backward, optimizer): every matmul and convolution of
  ``g`` and its vector-Jacobian products at the estimator's (precision, dtype); the spectral-norm
  estimates, and only they, at HIGHEST in float32. Evaluation with the configs' test estimator: all HIGHEST."""
  model, variables, _ = _small_image_flow()
  config = default_config()
  config.estimator.update(policy)
  config.eval_estimator = dict(kind="series", n_terms=3)  # a config replacing the dict keeps 'highest'
  data = setup.TrainingData.synthetic((4, 4, 1), 256, 8)
  task = setup.make_task(config, model, data)
  assert task.estimator == PowerSeries(**{"gradient": "backprop", **policy})
  optimizer = optax.adam(1e-3)
  step = make_train_step(task, optimizer, 0.999, jax.random.key(2))
  lowered = jax.jit(step).lower(TrainState.create(variables, optimizer), (data.train[:4],))
  found = _precisions_and_dtypes(lowered.as_text())
  assert set(found) == {expected, ("HIGHEST", "f32")}, found
  assert found[expected] > found[("HIGHEST", "f32")]  # g forward and backward, every term

  evaluate = make_eval_step(task, jax.random.key(3))
  evaluated = _precisions_and_dtypes(jax.jit(evaluate).lower(variables, data.test[:4], 0).as_text())
  assert set(evaluated) == {("HIGHEST", "f32")}, evaluated


@pytest.mark.parametrize("estimator", [PowerSeries(n_terms=4, n_probes=2), Roulette(n_exact_terms=2, n_probes=2)],
                         ids=["series", "roulette"])
def test_bfloat16_compute_matches_float32_to_bfloat16_resolution(estimator):
  """``compute_dtype='bfloat16'``: same probes (drawn in float32, rounded), log p and g(x) in float32,
  log p within a few bfloat16 units of the float32 computation, gradients within a few percent."""
  model, variables, x = _small_image_flow()
  half = dataclasses.replace(estimator, compute_dtype="bfloat16")
  key = jax.random.key(2)

  @functools.partial(jax.jit, static_argnums=1)
  def log_prob_and_gradient(params, estimator):
    """Per-example log p, and the gradient of its mean: one compiled program per estimator."""
    def mean_log_prob(params):
      values = model.apply({**variables, "params": params}, x, estimator=estimator, rngs={"logdet": key})
      return jnp.mean(values), values
    (_, values), gradient = jax.value_and_grad(mean_log_prob, has_aux=True)(params)
    return values, gradient

  (full_value, full_grad), (half_value, half_grad) = (log_prob_and_gradient(variables["params"], e)
                                                      for e in (estimator, half))
  assert half_value.dtype == jnp.float32
  # bfloat16 keeps 8 bits of mantissa: agreement to a few units of its resolution, relative to |log p|.
  scale = float(jnp.max(jnp.abs(full_value)))
  np.testing.assert_allclose(half_value, full_value, atol=4 * float(jnp.finfo(jnp.bfloat16).eps) * scale)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(half_grad))
  difference = optax.tree.norm(jax.tree.map(jnp.subtract, full_grad, half_grad))
  assert float(difference) < 0.1 * float(optax.tree.norm(full_grad))  # a few percent: sums of bfloat16 products


def test_compute_dtype_is_stored_by_name():
  assert PowerSeries(compute_dtype=jnp.bfloat16) == PowerSeries(compute_dtype="bfloat16")
  assert Roulette(compute_dtype=np.dtype("float16")).compute_dtype == "float16"


@pytest.mark.parametrize("bad", ["int8", "fp16", jnp.int32])
def test_unknown_compute_dtype_is_rejected_by_name(bad):
  with pytest.raises(ValueError, match="compute_dtype: expected None"):
    PowerSeries(compute_dtype=bad)
  with pytest.raises(ValueError, match="compute_dtype: expected None"):
    Roulette(compute_dtype=bad)
  with pytest.raises(ValueError, match="precision: expected None"):
    Roulette(precision="fp32")
