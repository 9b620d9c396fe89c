"""Self-check of iresflow's core on a small random i-ResNet block; prints what it verified.

Run: ``python experiments/self_check.py``. Every line it prints is a comparison it made against an
exact computation (SVD, materialised Jacobian), and it exits non-zero if any comparison fails.
"""

from __future__ import annotations

import math
import sys

import jax
import jax.numpy as jnp
import numpy as np

from iresflow.core import fixed_point, logdet, spectral


def main() -> int:
  failures = 0

  def report(ok: bool, text: str) -> None:
    nonlocal failures
    failures += not ok
    print(f"[{'ok' if ok else 'FAIL'}] {text}")

  key1, key2, key3, key4 = jax.random.split(jax.random.key(0), 4)
  shape, hidden, coeff = (6, 6, 2), 8, 0.9
  kernels = [jax.random.normal(key1, (3, 3, 2, hidden)), jax.random.normal(key2, (3, 3, hidden, 2))]
  conv = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))

  # Spectral normalisation (Sec. 2.1, eq. 2) with power iteration on the convolution itself.
  normalized = []
  for kernel, in_channels in zip(kernels, (2, hidden)):
    in_shape = shape[:2] + (in_channels,)
    op = lambda u, k=kernel: conv(u[None], k)[0]
    sigma, _ = spectral.power_iteration(op, jax.random.normal(key3, in_shape), 2000)
    bound = spectral.conv_norm_bound(kernel, shape[:2], "SAME")
    matrix = jax.jacfwd(op)(jnp.zeros(in_shape)).reshape(-1, math.prod(in_shape))
    exact = float(np.linalg.svd(np.asarray(matrix, np.float64), compute_uv=False)[0])
    report(float(sigma) <= exact * (1 + 1e-5) and abs(float(sigma) - exact) < 1e-3 * exact,
           f"power iteration {float(sigma):.5f} vs exact conv norm {exact:.5f} (SVD of the operator)")
    report(bound >= exact * (1 - 1e-6), f"FFT bound {bound:.5f} >= exact {exact:.5f}")
    normalized.append(spectral.soft_normalize(kernel, bound, coeff**0.5))
  g = lambda x: conv(jax.nn.elu(conv(x, normalized[0])), normalized[1])
  certified = math.prod(spectral.conv_norm_bound(k, shape[:2]) for k in normalized)
  report(certified < 1, f"certified Lip(g) <= {certified:.4f} < 1")

  # Algorithm 1: fixed-point inverse.
  x = jax.random.normal(key4, (4,) + shape)
  y = x + g(x)
  x_rec, info = jax.jit(lambda y: fixed_point.fixed_point_inverse(g, y, atol=1e-6, rtol=0.0))(y)
  error = float(jnp.max(jnp.abs(x_rec - x)))
  report(bool(jnp.all(info.converged)) and error < 1e-4,
         f"inverse: max |x - F^-1(F(x))| = {error:.2e} after {int(jnp.max(info.iterations))} iterations")

  # Algorithm 2: power-series log-det vs jacfwd + slogdet.
  n_terms = 10
  _, exact_ld = logdet.exact_logdet(g, x)
  _, estimate = jax.jit(lambda x: logdet.power_series_logdet(
      jax.random.key(1), g, x, n_terms=n_terms, n_probes=512))(x)
  d = math.prod(shape)
  bound = logdet.series_truncation_bound(certified, d, n_terms)
  lower, upper = logdet.logdet_bounds(certified, d)
  for e, s in zip(np.asarray(exact_ld), np.asarray(estimate)):
    report(lower <= e <= upper, f"exact log-det {e:8.4f} inside Lemma 7 bounds [{lower:.1f}, {upper:.1f}]")
    report(abs(e - s) <= bound + 0.5,
           f"series ({n_terms} terms, 512 probes) {s:8.4f}: |error| {abs(e - s):.3f} <= Theorem 3 "
           f"bound {bound:.3f} + 0.5 statistical")
  print(f"{failures} failed" if failures else "all checks passed")
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
