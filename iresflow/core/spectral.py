"""Spectral norms of linear operators: estimate, normalise, and bound.

Section 2.1 of Behrmann et al. (2019), "Invertible Residual Networks": a residual block
``x + g(x)`` is invertible when ``Lip(g) < 1``, and ``Lip(g) <= prod_i ||W_i||_2`` when ``g`` is a
composition of linear layers ``W_i`` and 1-Lipschitz activations. This module provides

* :func:`power_iteration` -- the power method on the operator itself (a dense matmul, or a
  convolution with its real padding and stride at the real input shape; Gouk et al. 2018). Its
  estimate never exceeds the true norm.
* :func:`lanczos_iteration` -- the same estimate from a Krylov space, far faster when the top
  singular values are clustered (convolutions, and every layer during training).
* :func:`soft_normalize` -- eq. (2) of the paper, ``W / max(1, sigma / c)``.
* :func:`dense_norm_bound` and :func:`conv_norm_bound` -- rigorous upper bounds, computed on the host
  in float64 (SVD; the FFT method of Sedghi et al. 2019 for convolutions), for certificates.
* :func:`conv_operator_norm` -- the exact norm of a small ``SAME`` convolution from its materialised
  matrix, where the FFT bound of a tiny input is loose.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from iresflow.core import validation

LinearFn = Callable[[jax.Array], jax.Array]

# Relative slack added to host-side float64 bounds so that rounding in the SVD itself cannot make a
# "bound" fall below the exact value (LAPACK's singular values are accurate to ~n * eps * sigma_max).
_FLOAT64_SLACK = 1e-10


def _normalize(v: jax.Array, eps: float) -> jax.Array:
  return v / (jnp.linalg.norm(v.ravel()) + eps)


def power_iteration(
    linear_fn: LinearFn,
    u: jax.typing.ArrayLike,
    n_iters: int = 1,
    *,
    eps: float = 1e-12,
) -> tuple[jax.Array, jax.Array]:
  """Estimates the spectral norm ``||A||_2`` of a linear operator by power iteration.

  Each iteration applies ``A`` and its adjoint ``A^T`` (from :func:`jax.linear_transpose`) to the
  carried right singular vector ``u``: ``v = A u / ||A u||``, ``u = A^T v / ||A^T v||``. The returned
  ``sigma = v^T A u`` with ``u, v`` held constant, so it is differentiable with respect to whatever
  parameters ``linear_fn`` closes over (as in Miyato et al. 2018), and ``sigma <= ||A||_2`` always
  (Cauchy-Schwarz): it is an under-estimate that converges to ``||A||_2`` from below.

  Args:
    linear_fn: the operator ``A``; must be linear in its argument. For a convolution pass the
      function at the layer's real input shape, padding and stride, e.g.
      ``lambda x: lax.conv_general_dilated(x[None], k, (1, 1), 'SAME', ...)[0]``.
    u: right singular vector estimate, of ``linear_fn``'s input shape. Carry it between calls.
    n_iters: number of power iterations (>= 0). 0 only re-evaluates ``sigma`` at ``u``.
    eps: guards the normalisations against a zero operator.

  Returns:
    ``(sigma, u)``: scalar estimate of ``||A||_2`` and the updated (unit-norm, gradient-stopped) ``u``.
  """
  validation.check_nonnegative_int(n_iters, "n_iters")
  u = jnp.asarray(u)
  adjoint = jax.linear_transpose(linear_fn, u)

  def step(u):
    v = _normalize(linear_fn(u), eps)
    (u,) = adjoint(v)
    return _normalize(u, eps)

  u = jax.lax.fori_loop(0, n_iters, lambda _, u: step(u), _normalize(u, eps))
  return _rayleigh_sigma(linear_fn, jax.lax.stop_gradient(u), eps), jax.lax.stop_gradient(u)


def _rayleigh_sigma(linear_fn: LinearFn, u: jax.Array, eps: float) -> jax.Array:
  """``v^T A u`` with ``v = A u / ||A u||`` held constant: ``<= ||A||`` and differentiable in ``A``."""
  a_u = linear_fn(u)
  v = jax.lax.stop_gradient(_normalize(a_u, eps))
  return jnp.vdot(v.ravel(), a_u.ravel())


def lanczos_iteration(
    linear_fn: LinearFn,
    u: jax.typing.ArrayLike,
    n_steps: int = 5,
    *,
    eps: float = 1e-12,
) -> tuple[jax.Array, jax.Array]:
  """Estimates ``||A||_2`` by Golub-Kahan-Lanczos bidiagonalisation started at ``u``.

  ``n_steps`` steps build orthonormal bases ``P`` (input side, ``P[0] = u``) and ``Q`` with
  ``Q^T A P = B`` upper bidiagonal (full re-orthogonalisation). The top singular value of ``B`` is the
  best estimate of ``||A||`` in the Krylov space, and its right singular vector, mapped back through
  ``P``, is the new ``u``. For the same ``n_steps`` applications of ``A`` and ``A^T`` as power
  iteration, the error falls like ``exp(-4 k sqrt(gap))`` instead of ``(1 - gap)^(2k)``: this matters
  for convolutions, whose top singular values are clustered, and more so during training, where
  spectral normalisation flattens the top of the spectrum and the top direction keeps turning.

  Like :func:`power_iteration` it returns ``sigma = v^T A u`` at the new ``u`` (so
  ``sigma <= ||A||_2``, differentiable in the operator's parameters) and a gradient-stopped ``u``.

  Args:
    linear_fn: the linear operator ``A`` (see :func:`power_iteration`).
    u: start vector of ``linear_fn``'s input shape; carry the returned one between calls.
    n_steps: Krylov steps ``k >= 0``; memory holds ``2k + 1`` vectors. 0 only re-evaluates sigma.
    eps: guards the normalisation of the start vector and of the returned ``u``. A breakdown (the Krylov
      space invariant, to rounding) ends the recursion: the later steps add nothing.

  Returns:
    ``(sigma, u)``.
  """
  validation.check_nonnegative_int(n_steps, "n_steps")
  u = jax.lax.stop_gradient(_normalize(jnp.asarray(u), eps))
  if n_steps == 0:
    return _rayleigh_sigma(linear_fn, u, eps), u
  adjoint = jax.linear_transpose(linear_fn, u)
  out_shape = jax.eval_shape(linear_fn, u).shape
  # A Krylov space cannot outgrow the operator's dimensions; past them the recursion breaks down. On the
  # input side it can reach one dimension more than the output side has: the start vector plus
  # range(A^T), which holds the top right singular vector (so a wide operator, n > m, needs m + 1 steps).
  n_steps = min(n_steps, u.size, math.prod(out_shape) + 1)
  apply = lambda p: linear_fn(p.reshape(u.shape)).ravel()
  apply_adjoint = lambda q: adjoint(q.reshape(out_shape))[0].ravel()
  n, m, dtype = u.size, math.prod(out_shape), u.dtype
  orthogonalize = lambda basis, w: w - basis.T @ (basis @ w)  # rows not yet filled are zero

  # Breakdown: a new vector with norm at rounding level (relative to the norms seen so far) means the Krylov
  # space is invariant. Normalising that rounding noise would restart the recursion from a direction the
  # three-term recurrence does not describe, and its coefficients then grow without bound until they
  # overflow (an operator with one repeated singular value breaks down at once: a 1x1 convolution to one
  # channel, the last layer of an i-DenseNet's g on grayscale images). From a breakdown on, the remaining
  # vectors and coefficients are zero.
  tolerance = math.sqrt(float(jnp.finfo(dtype).eps))

  def normalized_unless_breakdown(w, scale, stopped):
    norm = jnp.linalg.norm(w)
    stopped = stopped | (norm <= tolerance * jnp.maximum(scale, norm))
    return jnp.where(stopped, 0.0, w / jnp.where(stopped, 1.0, norm)), jnp.where(stopped, 0.0, norm), stopped

  def body(j, state):
    inputs, outputs, alphas, betas, stopped = state
    scale = jnp.maximum(jnp.max(alphas), jnp.max(betas))
    beta_prev = jnp.where(j > 0, betas[j - 1], 0.0)
    q = apply(inputs[j]) - beta_prev * outputs[jnp.maximum(j - 1, 0)]
    q, alpha, stopped = normalized_unless_breakdown(orthogonalize(outputs, q), scale, stopped)
    p = orthogonalize(inputs, apply_adjoint(q) - alpha * inputs[j])
    p, beta, stopped = normalized_unless_breakdown(p, jnp.maximum(scale, alpha), stopped)
    return inputs.at[j + 1].set(p), outputs.at[j].set(q), alphas.at[j].set(alpha), betas.at[j].set(beta), stopped

  inputs = jnp.zeros((n_steps + 1, n), dtype).at[0].set(u.ravel())
  state = (inputs, jnp.zeros((n_steps, m), dtype), jnp.zeros(n_steps, dtype), jnp.zeros(n_steps, dtype),
           jnp.zeros((), bool))
  inputs, _, alphas, betas, _ = jax.lax.fori_loop(0, n_steps, body, state)
  bidiagonal = jnp.diag(alphas) + jnp.diag(betas[:-1], 1)
  _, _, right = jnp.linalg.svd(bidiagonal)
  ritz = (inputs[:n_steps].T @ right[0]).reshape(u.shape)
  # The SVD fixes a singular vector only up to sign; keep the one facing the start vector, so the
  # carried state moves continuously and does not depend on how the SVD happened to be computed.
  ritz = jnp.where(jnp.vdot(ritz.ravel(), u.ravel()) < 0, -ritz, ritz)
  u = jax.lax.stop_gradient(_normalize(ritz, eps))
  return _rayleigh_sigma(linear_fn, u, eps), u


def soft_normalize(weight: jax.typing.ArrayLike, sigma: jax.typing.ArrayLike, coeff: float) -> jax.Array:
  """Soft spectral normalisation, eq. (2): ``W / max(1, sigma / coeff)``.

  Leaves ``W`` untouched when its (estimated) norm is already below ``coeff`` and scales it to norm
  ``coeff`` otherwise.

  Args:
    weight: any weight array (kernel of a dense or convolutional layer).
    sigma: scalar estimate of the operator norm of ``weight``, e.g. from :func:`power_iteration`.
    coeff: target bound ``c`` in ``(0, 1)``.

  Returns:
    The rescaled weight, same shape and dtype as ``weight``.
  """
  validation.check_coeff(coeff)
  factor = jnp.maximum(1.0, sigma / coeff)
  return jnp.asarray(weight) / factor


def dense_norm_bound(kernel: jax.typing.ArrayLike) -> float:
  """Rigorous upper bound on ``||W||_2`` of a dense kernel: float64 SVD plus rounding slack.

  Runs on the host (NumPy), not under ``jit``: it is meant for certificates after training.

  Args:
    kernel: ``(in_features, out_features)`` matrix.

  Returns:
    A Python float ``>= ||kernel||_2``.
  """
  kernel = np.asarray(kernel, dtype=np.float64)
  if kernel.ndim != 2:
    raise ValueError(f"kernel: expected a 2-D (in, out) matrix, got shape {kernel.shape}")
  return float(np.linalg.svd(kernel, compute_uv=False)[0]) * (1 + _FLOAT64_SLACK)


def _conv_kernel_float64(kernel: jax.typing.ArrayLike) -> np.ndarray:
  """``kernel`` as a float64 NumPy array, checked to be a 2-D convolution's ``(kh, kw, c_in, c_out)``."""
  kernel = np.asarray(kernel, dtype=np.float64)
  if kernel.ndim != 4:
    raise ValueError(f"kernel: expected a 4-D (kh, kw, c_in, c_out) kernel, got shape {kernel.shape}")
  return kernel


def circular_conv_singular_values(kernel: jax.typing.ArrayLike, grid: Sequence[int]) -> np.ndarray:
  """All singular values of a 2-D circular convolution (Sedghi et al. 2019, Theorem 6).

  A multi-channel circular convolution on an ``n1 x n2`` grid is block-diagonalised by the 2-D DFT:
  its singular values are the union over the ``n1 * n2`` frequencies of the singular values of the
  ``c_in x c_out`` matrices ``FFT2(kernel)[f]``.

  Args:
    kernel: ``(kh, kw, c_in, c_out)`` kernel (Flax's HWIO layout).
    grid: spatial size ``(n1, n2)`` of the circular input, each at least the kernel size.

  Returns:
    float64 array of shape ``(n1, n2, min(c_in, c_out))``.
  """
  kernel = _conv_kernel_float64(kernel)
  n1, n2 = (int(n) for n in grid)
  if n1 < kernel.shape[0] or n2 < kernel.shape[1]:
    raise ValueError(f"grid: {tuple(grid)} is smaller than the kernel's spatial size {kernel.shape[:2]}")
  spectrum = np.fft.fft2(kernel, s=(n1, n2), axes=(0, 1))
  return np.linalg.svd(spectrum, compute_uv=False)


def conv_norm_bound(
    kernel: jax.typing.ArrayLike,
    input_size: Sequence[int],
    padding: str | Sequence[tuple[int, int]] = "SAME",
) -> float:
  """Rigorous upper bound on the operator norm of a 2-D convolution at a given input size.

  * ``padding='CIRCULAR'``: the exact norm of the circular convolution on the ``input_size`` grid.
  * zero padding (``'SAME'``, ``'VALID'`` or explicit pairs), any stride: the layer equals
    ``P C E`` where ``E`` embeds the input into the zero-padded grid (an isometry), ``C`` is the
    circular convolution on that grid (no output the layer keeps wraps around) and ``P`` keeps
    (and, for a stride, subsamples) outputs, a coordinate projection. So ``||layer|| <= ||C||``,
    the circular norm on the padded grid. The stride does not enter the bound.

  Runs on the host in float64; the result carries a relative slack of 1e-10 for rounding.

  Args:
    kernel: ``(kh, kw, c_in, c_out)`` kernel.
    input_size: spatial size ``(h, w)`` of the layer's input.
    padding: ``'SAME'``, ``'VALID'``, ``'CIRCULAR'`` or ``((top, bottom), (left, right))``.

  Returns:
    A Python float ``>=`` the layer's operator norm (equal to it for ``'CIRCULAR'``).
  """
  kernel = _conv_kernel_float64(kernel)
  h, w = (int(n) for n in input_size)
  kh, kw = kernel.shape[:2]
  if isinstance(padding, str):
    mode = padding.upper()
    if mode == "CIRCULAR":
      return float(circular_conv_singular_values(kernel, (h, w)).max()) * (1 + _FLOAT64_SLACK)
    if mode == "SAME":
      grid = (h + kh - 1, w + kw - 1)  # SAME pads k - 1 in total per axis
    elif mode == "VALID":
      grid = (h, w)
    else:
      raise ValueError(f"padding: expected 'SAME', 'VALID', 'CIRCULAR' or pairs, got {padding!r}")
  else:
    (top, bottom), (left, right) = padding
    grid = (h + top + bottom, w + left + right)
  grid = (max(grid[0], kh), max(grid[1], kw))  # a larger zero-padded circular grid is still a bound
  return float(circular_conv_singular_values(kernel, grid).max()) * (1 + _FLOAT64_SLACK)


def conv_operator_matrix(kernel: jax.typing.ArrayLike, input_size: Sequence[int]) -> np.ndarray:
  """The matrix of a stride-1 ``SAME`` (zero-padded) convolution at ``input_size``, in float64.

  Row ``(i, j, o)``, column ``(p, q, c)`` holds ``kernel[p - i + top, q - j + left, c, o]`` where
  ``top = (kh - 1) // 2`` and ``left = (kw - 1) // 2`` are XLA's ``SAME`` paddings, or 0 outside the
  kernel. The entries are the kernel's own numbers: nothing is rounded.

  Args:
    kernel: ``(kh, kw, c_in, c_out)``.
    input_size: ``(h, w)``.

  Returns:
    ``(h * w * c_out, h * w * c_in)`` array.
  """
  kernel = _conv_kernel_float64(kernel)
  kh, kw, c_in, c_out = kernel.shape
  h, w = (int(n) for n in input_size)
  top, left = (kh - 1) // 2, (kw - 1) // 2
  matrix = np.zeros((h, w, c_out, h, w, c_in))
  for i in range(h):
    for j in range(w):
      for a in range(kh):
        for b in range(kw):
          p, q = i + a - top, j + b - left
          if 0 <= p < h and 0 <= q < w:
            matrix[i, j, :, p, q, :] = kernel[a, b].T
  return matrix.reshape(h * w * c_out, h * w * c_in)


def conv_operator_norm(kernel: jax.typing.ArrayLike, input_size: Sequence[int]) -> float:
  """Exact operator norm (plus rounding slack) of a stride-1 ``SAME`` convolution by float64 SVD.

  Costs ``O((h w c)^3)``: meant for inputs up to a few thousand dimensions, where the FFT bound
  of :func:`conv_norm_bound` can be loose (a 3x3 kernel on a 2x2 input sees a 4x4 circular grid).
  """
  matrix = conv_operator_matrix(kernel, input_size)
  return float(np.linalg.svd(matrix, compute_uv=False)[0]) * (1 + _FLOAT64_SLACK)
