"""Power iteration and norm bounds against SVDs of materialised operators."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iresflow.core import spectral
from tests import helpers


def _power(linear_fn, input_shape, n_iters, seed=0):
  u0 = jax.random.normal(jax.random.key(seed), input_shape)
  sigma, u = jax.jit(lambda u: spectral.power_iteration(linear_fn, u, n_iters))(u0)
  return float(sigma), u


def test_dense_power_iteration_converges_to_largest_singular_value():
  w = jax.random.normal(jax.random.key(1), (12, 7))
  exact = np.linalg.svd(np.asarray(w, np.float64), compute_uv=False)[0]
  sigma, u = _power(lambda u: u @ w, (12,), 500)
  assert sigma == pytest.approx(exact, rel=1e-5)
  assert sigma <= exact * (1 + 1e-6)
  assert float(jnp.linalg.norm(u)) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("kernel_size", [3, 1])
@pytest.mark.parametrize("stride", [1, 2])
def test_conv_power_iteration_matches_materialised_operator(kernel_size, stride):
  shape = (6, 6, 3)
  kernel = jax.random.normal(jax.random.key(kernel_size + 10 * stride), (kernel_size, kernel_size, 3, 4))
  linear_fn = lambda u: helpers.conv(u[None], kernel, stride)[0]
  exact = helpers.exact_norm(linear_fn, shape)
  sigma, _ = _power(linear_fn, shape, 1000)
  assert sigma == pytest.approx(exact, rel=1e-4)
  assert sigma <= exact * (1 + 1e-5)


def test_power_iteration_underestimates_at_every_step():
  shape = (5, 5, 2)
  kernel = jax.random.normal(jax.random.key(3), (3, 3, 2, 2))
  linear_fn = lambda u: helpers.conv(u[None], kernel)[0]
  exact = helpers.exact_norm(linear_fn, shape)
  u = jax.random.normal(jax.random.key(4), shape)
  previous = 0.0
  for _ in range(30):
    sigma, u = spectral.power_iteration(linear_fn, u, 1)
    assert float(sigma) <= exact * (1 + 1e-5)
    assert float(sigma) >= previous * (1 - 1e-5)  # monotone for the power method on A^T A
    previous = float(sigma)


def test_power_iteration_sigma_is_differentiable_in_the_weights():
  w = jax.random.normal(jax.random.key(5), (6, 6))
  u0 = jax.random.normal(jax.random.key(6), (6,))
  grad = jax.grad(lambda w: spectral.power_iteration(lambda u: u @ w, u0, 300)[0])(w)
  # d sigma_max / dW = u1 v1^T, the outer product of the top singular vectors.
  left, _, right = np.linalg.svd(np.asarray(w, np.float64))
  expected = np.outer(left[:, 0], right[0])
  np.testing.assert_allclose(np.abs(np.asarray(grad)), np.abs(expected), atol=1e-4)


def test_soft_normalize_eq_2():
  w = jnp.ones((3, 3))
  np.testing.assert_allclose(spectral.soft_normalize(w, 0.5, 0.9), w)  # below c: unchanged
  np.testing.assert_allclose(spectral.soft_normalize(w, 3.0, 0.9), w * 0.9 / 3.0, rtol=1e-6)


@pytest.mark.parametrize("coeff", [0.0, 1.0, 1.5, -0.1])
def test_soft_normalize_rejects_coeff_outside_unit_interval(coeff):
  with pytest.raises(ValueError, match="coeff"):
    spectral.soft_normalize(jnp.ones(3), 1.0, coeff)


def test_dense_norm_bound_is_the_svd():
  w = np.random.default_rng(0).normal(size=(9, 4))
  bound = spectral.dense_norm_bound(w)
  exact = np.linalg.svd(w, compute_uv=False)[0]
  assert bound >= exact
  assert bound == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize("kernel_size,channels", [(3, (2, 3)), (1, (3, 3)), (3, (4, 2)), (5, (1, 2))])
def test_fft_bound_is_exact_for_circular_convolution(kernel_size, channels):
  shape = (7, 7, channels[0])
  kernel = jax.random.normal(jax.random.key(kernel_size), (kernel_size, kernel_size) + channels)
  exact = helpers.exact_norm(lambda u: helpers.circular_conv(u[None], kernel)[0], shape)
  bound = spectral.conv_norm_bound(kernel, shape[:2], "CIRCULAR")
  assert bound == pytest.approx(exact, rel=1e-5)


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_fft_bound_upper_bounds_zero_padded_convolution(kernel_size, stride, padding):
  shape = (8, 8, 2)
  kernel = jax.random.normal(jax.random.key(kernel_size * stride), (kernel_size, kernel_size, 2, 3))
  exact = helpers.exact_norm(lambda u: helpers.conv(u[None], kernel, stride, padding)[0], shape)
  bound = spectral.conv_norm_bound(kernel, shape[:2], padding)
  assert bound >= exact * (1 - 1e-6)  # float32 Jacobian vs float64 bound
  if stride == 1 and padding == "SAME":
    # Stride 1, SAME: the layer keeps most of the padded grid, so the bound is not loose by much.
    assert bound <= 1.5 * exact


def test_fft_bound_with_explicit_padding_pairs():
  shape = (6, 6, 2)
  kernel = jax.random.normal(jax.random.key(9), (3, 3, 2, 2))
  pads = ((2, 0), (0, 2))
  exact = helpers.exact_norm(lambda u: helpers.conv(u[None], kernel, padding=pads)[0], shape)
  assert spectral.conv_norm_bound(kernel, shape[:2], pads) >= exact * (1 - 1e-6)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: spectral.conv_norm_bound(np.ones((3, 3, 2)), (4, 4)), "kernel"),
        (lambda: spectral.conv_norm_bound(np.ones((3, 3, 2, 2)), (4, 4), "REFLECT"), "padding"),
        (lambda: spectral.dense_norm_bound(np.ones((2, 2, 2))), "kernel"),
        (lambda: spectral.circular_conv_singular_values(np.ones((5, 5, 1, 1)), (3, 3)), "grid"),
        (lambda: spectral.power_iteration(lambda u: u, jnp.ones(3), -1), "n_iters"),
    ],
)
def test_bad_input_is_named(call, match):
  with pytest.raises(ValueError, match=match):
    call()


@pytest.mark.parametrize("kernel_size,size", [(3, (4, 5)), (1, (3, 3)), (3, (2, 2)), (5, (3, 4)), (2, (4, 4))])
def test_materialised_conv_matrix_is_the_operator(kernel_size, size):
  kernel = jax.random.normal(jax.random.key(kernel_size), (kernel_size, kernel_size, 2, 3))
  shape = size + (2,)
  expected = helpers.materialize(lambda u: helpers.conv(u[None], kernel)[0], shape)
  np.testing.assert_allclose(spectral.conv_operator_matrix(kernel, size), expected, atol=1e-6)
  exact = np.linalg.svd(expected, compute_uv=False)[0]
  assert spectral.conv_operator_norm(kernel, size) == pytest.approx(exact, rel=1e-6)
  assert spectral.conv_operator_norm(kernel, size) <= spectral.conv_norm_bound(kernel, size) * (1 + 1e-9)


@pytest.mark.parametrize("kernel_size,stride", [(3, 1), (1, 1), (3, 2)])
def test_lanczos_converges_to_the_exact_norm_and_never_exceeds_it(kernel_size, stride):
  shape = (6, 6, 3)
  kernel = jax.random.normal(jax.random.key(20 + kernel_size + stride), (kernel_size, kernel_size, 3, 4))
  linear_fn = lambda u: helpers.conv(u[None], kernel, stride)[0]
  exact = helpers.exact_norm(linear_fn, shape)
  u0 = jax.random.normal(jax.random.key(1), shape)
  sigma, u = jax.jit(lambda u: spectral.lanczos_iteration(linear_fn, u, 40))(u0)
  assert float(sigma) == pytest.approx(exact, rel=1e-4)
  assert float(sigma) <= exact * (1 + 1e-5)
  assert float(jnp.linalg.norm(u)) == pytest.approx(1.0, rel=1e-5)


def test_lanczos_beats_power_iteration_on_a_clustered_spectrum():
  # Singular values 1.0, 0.99, 0.98, ...: power iteration converges like 0.99^(2k).
  rng = np.random.default_rng(0)
  left, _ = np.linalg.qr(rng.normal(size=(30, 30)))
  right, _ = np.linalg.qr(rng.normal(size=(20, 20)))
  singular = 1.0 - 0.01 * np.arange(20)
  w = jnp.asarray(left[:, :20] @ np.diag(singular) @ right.T, jnp.float32)
  u0 = jax.random.normal(jax.random.key(2), (20,))
  power, _ = spectral.power_iteration(lambda u: w @ u, u0, 10)
  lanczos, _ = spectral.lanczos_iteration(lambda u: w @ u, u0, 10)
  assert 1.0 - float(lanczos) < 0.25 * (1.0 - float(power))
  assert float(lanczos) <= 1.0 + 1e-5
  # Warm starts accumulate: 10 calls of 5 steps reach what one call of many steps does.
  u = u0
  for _ in range(10):
    sigma, u = spectral.lanczos_iteration(lambda v: w @ v, u, 5)
  assert float(sigma) == pytest.approx(1.0, abs=2e-3)


def test_lanczos_handles_more_steps_than_dimensions():
  w = jax.random.normal(jax.random.key(3), (3, 2))
  sigma, u = spectral.lanczos_iteration(lambda v: w @ v, jnp.ones(2), 50)
  assert float(sigma) == pytest.approx(np.linalg.svd(np.asarray(w), compute_uv=False)[0], rel=1e-5)
  assert bool(jnp.all(jnp.isfinite(u)))


@pytest.mark.parametrize("shape", [(20, 2), (12, 4), (2, 20), (5, 1), (1, 5)])
def test_lanczos_is_exact_once_the_krylov_space_is_full(shape):
  # A wide operator (more inputs than outputs) needs one step more than its output dimension: the
  # start vector plus range(A^T). Capping at the output dimension left the top direction out
  # (a 20 -> 2 layer estimated at 0.98 had norm 1.115; issue #32).
  w = jax.random.normal(jax.random.key(4), shape)
  exact = np.linalg.svd(np.asarray(w, np.float64), compute_uv=False)[0]
  for seed in range(3):
    u0 = jax.random.normal(jax.random.key(seed), (shape[0],))
    sigma, _ = spectral.lanczos_iteration(lambda u: u @ w, u0, 50)
    assert float(sigma) == pytest.approx(exact, rel=1e-5)


def test_lanczos_sigma_is_differentiable_in_the_weights():
  w = jax.random.normal(jax.random.key(5), (6, 6))
  u0 = jax.random.normal(jax.random.key(6), (6,))
  grad = jax.grad(lambda w: spectral.lanczos_iteration(lambda u: u @ w, u0, 6)[0])(w)
  left, _, right = np.linalg.svd(np.asarray(w, np.float64))
  np.testing.assert_allclose(np.abs(np.asarray(grad)), np.abs(np.outer(left[:, 0], right[0])), atol=1e-4)


@pytest.mark.parametrize("n_steps", [2, 10, 50])
def test_lanczos_stops_at_a_breakdown_instead_of_diverging(n_steps):
  # A 1x1 convolution from 29 channels to one over 8x8 pixels: 64 equal singular values ||w||, so the
  # Krylov space is invariant after one step. Continuing from rounding noise made the coefficients
  # overflow (nan from 30 steps on), which made an i-DenseNet on grayscale images nan at init.
  kernel = 0.2 * jax.random.normal(jax.random.key(0), (1, 1, 29, 1))
  conv = lambda v: jax.lax.conv_general_dilated(v[None], kernel, (1, 1), "SAME",
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))[0]
  u0 = jax.random.normal(jax.random.key(1), (8, 8, 29))
  sigma, u = jax.jit(lambda u: spectral.lanczos_iteration(conv, u, n_steps))(u0)
  assert float(sigma) == pytest.approx(float(jnp.linalg.norm(kernel)), rel=1e-5)
  assert bool(jnp.all(jnp.isfinite(u))) and float(jnp.linalg.norm(u)) == pytest.approx(1.0, rel=1e-5)
  # An operator that maps the start vector to zero: nothing to find, and nothing non-finite.
  sigma, u = spectral.lanczos_iteration(lambda v: jnp.zeros(3) * v[:3].sum(), jnp.ones(4), 10)
  assert float(sigma) == 0.0 and bool(jnp.all(jnp.isfinite(u)))
