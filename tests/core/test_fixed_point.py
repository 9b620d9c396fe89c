"""Algorithm 1: the fixed-point inverse, its stopping rule, and the Banach bound of eq. (1)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iresflow.core import fixed_point
from tests import helpers

LIPSCHITZ = [0.5, 0.9, 0.99]


def _residual_fn(kind, lipschitz, seed=0):
  key = jax.random.key(seed)
  if kind == "dense":
    return helpers.contractive_mlp(key, 6, 16, lipschitz), (8, 6)
  return helpers.contractive_conv_net(key, (5, 5, 2), 4, lipschitz), (4, 5, 5, 2)


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("lipschitz", LIPSCHITZ)
def test_inverse_round_trip_and_banach_bound(kind, lipschitz):
  g, shape = _residual_fn(kind, lipschitz)
  x_true = 2.0 * jax.random.normal(jax.random.key(1), shape)
  y = x_true + g(x_true)
  atol = 1e-6
  x, info = jax.jit(lambda y: fixed_point.fixed_point_inverse(g, y, atol=atol, rtol=0.0, max_iters=5000))(y)
  assert bool(jnp.all(info.converged))
  np.testing.assert_allclose(x + g(x), y, atol=1e-5)
  np.testing.assert_allclose(info.residual, np.max(np.abs(np.asarray(x + g(x) - y)).reshape(shape[0], -1), 1),
                             atol=1e-6)
  # eq. (1): ||x - x_n|| <= L^n/(1-L) ||x_1 - x_0||, with ||x_1 - x_0|| = ||g(y)||_2 per example.
  first_steps = np.linalg.norm(np.asarray(g(y)).reshape(shape[0], -1), axis=1)
  for iterations, first_step in zip(np.asarray(info.iterations), first_steps):
    assert iterations <= fixed_point.banach_iterations(lipschitz, float(first_step), atol)
  # The inverse is unique (Theorem 1): it recovers the input itself, within 1/(1-L) of the residual.
  np.testing.assert_allclose(x, x_true, atol=1e-5 / (1 - lipschitz))


def test_smaller_lipschitz_needs_fewer_iterations():
  counts = []
  for lipschitz in LIPSCHITZ:
    g, shape = _residual_fn("dense", lipschitz)
    y = jax.random.normal(jax.random.key(2), shape)
    _, info = fixed_point.fixed_point_inverse(g, y, atol=1e-6, rtol=0.0, max_iters=5000)
    counts.append(int(jnp.max(info.iterations)))
  assert counts == sorted(counts) and counts[0] < counts[-1]


def test_max_iters_reached_is_reported_not_hidden():
  g, shape = _residual_fn("dense", 0.9)
  y = 3.0 * jax.random.normal(jax.random.key(3), shape)
  x, info = fixed_point.fixed_point_inverse(g, y, atol=1e-7, rtol=0.0, max_iters=2)
  assert not bool(jnp.any(info.converged))
  assert np.all(np.asarray(info.iterations) == 2)
  assert np.all(np.asarray(info.residual) > 1e-7)
  assert bool(jnp.all(jnp.isfinite(x)))


def test_zero_iterations_returns_the_start():
  g, shape = _residual_fn("dense", 0.5)
  y = jax.random.normal(jax.random.key(4), shape)
  x, info = fixed_point.fixed_point_inverse(g, y, max_iters=0)
  np.testing.assert_array_equal(x, y)
  assert np.all(np.asarray(info.iterations) == 0)


def test_per_example_results_do_not_depend_on_the_batch():
  g, shape = _residual_fn("conv", 0.9)
  y = jax.random.normal(jax.random.key(5), shape) * jnp.arange(1, shape[0] + 1).reshape(-1, 1, 1, 1)
  x_batch, info_batch = fixed_point.fixed_point_inverse(g, y, atol=1e-6, rtol=0.0)
  for i in range(shape[0]):
    x_single, info_single = fixed_point.fixed_point_inverse(g, y[i:i + 1], atol=1e-6, rtol=0.0)
    assert int(info_single.iterations[0]) == int(info_batch.iterations[i])
    np.testing.assert_allclose(x_single[0], x_batch[i], atol=1e-6)
  # Examples of different scale stop after different numbers of iterations.
  assert len(set(np.asarray(info_batch.iterations).tolist())) > 1


def test_vmap_over_batches():
  g, shape = _residual_fn("dense", 0.9)
  ys = jax.random.normal(jax.random.key(6), (3,) + shape)
  xs, infos = jax.vmap(lambda y: fixed_point.fixed_point_inverse(g, y, atol=1e-6, rtol=0.0))(ys)
  assert xs.shape == ys.shape and infos.converged.shape == (3, shape[0])
  np.testing.assert_allclose(jax.vmap(lambda x: x + g(x))(xs), ys, atol=1e-5)


def test_rtol_scales_with_the_output():
  g, shape = _residual_fn("dense", 0.9)
  y = 100.0 * jax.random.normal(jax.random.key(7), shape)
  _, info = fixed_point.fixed_point_inverse(g, y, atol=0.0, rtol=1e-4)
  tolerance = 1e-4 * np.max(np.abs(np.asarray(y)).reshape(shape[0], -1), axis=1)
  assert np.all(np.asarray(info.residual) <= tolerance)


def test_banach_iterations_formula():
  # L^n / (1 - L) * 1 <= 1e-3 with L = 0.5: n >= log2(2000) = 10.97 -> 11.
  assert fixed_point.banach_iterations(0.5, 1.0, 1e-3) == 11
  assert fixed_point.banach_iterations(0.5, 1e-4, 1e-3) == 0
  with pytest.raises(ValueError, match="lipschitz"):
    fixed_point.banach_iterations(1.0, 1.0, 1e-3)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(y=jnp.ones((2, 3), jnp.int32)), TypeError, "y"),
        (dict(y=jnp.float32(1.0)), ValueError, "y"),
        (dict(y=jnp.ones((2, 3)), max_iters=-1), ValueError, "max_iters"),
        (dict(y=jnp.ones((2, 3)), max_iters=2.5), ValueError, "max_iters"),
        (dict(y=jnp.ones((2, 3)), atol=-1.0), ValueError, "atol"),
        (dict(y=jnp.ones((2, 3)), rtol=float("nan")), ValueError, "rtol"),
    ],
)
def test_bad_input_is_named(kwargs, error, match):
  with pytest.raises(error, match=match):
    fixed_point.fixed_point_inverse(lambda x: 0.5 * x, **kwargs)


def _linear_inverse_gradient(w, x, x_bar):
  """``y_bar`` of ``x = F^{-1}(y)`` for ``g(x) = tanh(x W)`` at the solution ``x``: ``(I + J_g)^{-T} x_bar``."""
  jacobians = jax.vmap(jax.jacfwd(lambda v: jnp.tanh(v @ w)))(x)
  eye = jnp.eye(x.shape[1])
  return jnp.stack([jnp.linalg.solve((eye + j).T, b) for j, b in zip(jacobians, x_bar)])


def test_adjoint_solve_that_does_not_converge_gives_nan_gradients_not_silently_wrong_ones():
  """The forward solve converges; the adjoint solve, whose right-hand side is 1e10 times larger than
  the forward one's, needs more iterations than ``max_iters`` allows to reach the same relative accuracy."""
  w = 0.9 * jnp.linalg.qr(jax.random.normal(jax.random.key(8), (4, 4)))[0]  # Lip(g) = 0.9, attained near 0
  g = lambda x: jnp.tanh(x @ w)
  y = 1e-4 * jax.random.normal(jax.random.key(9), (3, 4))
  solve = dict(atol=1e-6, rtol=1e-6)
  x, info = fixed_point.fixed_point_inverse(g, y, max_iters=1000, **solve)
  forward_iterations = int(jnp.max(info.iterations))
  assert bool(jnp.all(info.converged))
  x_bar = jnp.full_like(y, 1e6)
  exact = _linear_inverse_gradient(w, x, x_bar)

  def y_bar(max_iters, adjoint_failure):
    loss = lambda y: jnp.sum(fixed_point.fixed_point_inverse(g, y, max_iters=max_iters, **solve,
                                                            adjoint_failure=adjoint_failure)[0] * x_bar)
    _, info = fixed_point.fixed_point_inverse(g, y, max_iters=max_iters, **solve)
    assert bool(jnp.all(info.converged))  # the forward solve is fine at this max_iters
    return jax.grad(loss)(y)

  limited = forward_iterations + 2
  ignored = y_bar(limited, "ignore")
  assert bool(jnp.all(jnp.isfinite(ignored)))
  assert float(jnp.max(jnp.abs(ignored - exact) / jnp.abs(exact))) > 1e-3  # silently wrong by > 0.1%
  flagged = y_bar(limited, "nan")
  assert bool(jnp.all(jnp.isnan(flagged)))
  # With enough iterations both policies give the exact gradient.
  for policy in ("nan", "ignore"):
    np.testing.assert_allclose(y_bar(1000, policy), exact, rtol=1e-4)


def test_adjoint_failure_marks_only_the_examples_that_failed_and_every_parameter():
  w = 0.9 * jnp.linalg.qr(jax.random.normal(jax.random.key(8), (4, 4)))[0]
  y = 1e-4 * jax.random.normal(jax.random.key(9), (2, 4))
  x_bar = jnp.asarray([[1e6] * 4, [0.0] * 4])  # the second example's adjoint is 0: converged at once

  def loss(w, y):
    x, _ = fixed_point.fixed_point_inverse(lambda x: jnp.tanh(x @ w), y, atol=1e-6, rtol=0.0, max_iters=60)
    return jnp.sum(x * x_bar)

  w_bar, y_bar = jax.grad(loss, argnums=(0, 1))(w, y)
  assert bool(jnp.all(jnp.isnan(y_bar[0]))) and bool(jnp.all(y_bar[1] == 0.0))
  assert bool(jnp.all(jnp.isnan(w_bar)))
  with pytest.raises(ValueError, match="adjoint_failure"):
    fixed_point.fixed_point_inverse(lambda x: 0.5 * x, y, adjoint_failure="warn")
