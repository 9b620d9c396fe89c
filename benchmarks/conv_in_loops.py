"""Why a scanned training step is slow on XLA:CPU, and what a hand-written kernel gradient would change.

XLA:CPU emits the kernel-gradient convolutions of a loop body (``nn.scan`` over blocks, the series'
``fori_loop``) with non-canonical dimension orders (``f01b_i01o->01bf``) as naive loops; the same
convolutions in straight-line code are canonicalised and run on the library kernels. This script
measures an alternative that the library does not adopt (docs/benchmarks.md says why): a
convolution whose ``custom_vjp`` computes the kernel gradient as a canonical convolution
(``b01f_01io->b01f``: the cotangent as the image, the input as the kernel, output flipped), the same
form XLA gives it outside loops, and whose input gradient is again that convolution, so every order
of reverse-mode differentiation stays canonical.

Two measurements, each timed in turns (one call of each variant per round):

* isolated: the gradient of 8 residual blocks of three convolutions (3x3 -> 1x1 -> 3x3, 64 channels,
  SiLU) on a 64x14x14x4 batch, scanned and unrolled, with JAX's convolution and with the custom one;
* the training step of ``vs_normflows.py``'s image workload (8 blocks, 5-term series, both gradients),
  scanned and unrolled, with ``iresflow.nn.residual``'s convolution replaced by the custom one.

    python benchmarks/conv_in_loops.py           # docs/conv_in_loops.json (~6 min on 2 cores)
    python benchmarks/conv_in_loops.py --quick   # tiny sizes, seconds; prints only
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import vs_normflows as bench  # noqa: E402  (a sibling script)

DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def jax_conv(x, kernel, padding):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=DIMENSIONS)


def _transposed_padding(kernel_shape, padding):
  """Padding of the convolutions that transpose one with ``padding`` (stride 1)."""
  return tuple((kernel_shape[i] - 1 - lo, kernel_shape[i] - 1 - hi) for i, (lo, hi) in enumerate(padding))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def canonical_conv(x, kernel, padding):
  """``jax_conv`` with both gradients computed as canonical convolutions (reverse mode only)."""
  return jax_conv(x, kernel, padding)


def _canonical_conv_forward(x, kernel, padding):
  return jax_conv(x, kernel, padding), (x, kernel)


def _canonical_conv_backward(padding, residuals, cotangent):
  x, kernel = residuals
  transposed = _transposed_padding(kernel.shape, padding)
  x_grad = canonical_conv(cotangent, jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2), transposed)
  # kernel_grad[i, j, c, o] = sum_{n,h,w} x[n, h + i - lo, w + j - lo, c] cotangent[n, h, w, o]: the
  # cotangent (o, H, W, n) as the image and x (H, W, n, c) as the kernel give it flipped in (i, j).
  flipped = canonical_conv(cotangent.transpose(3, 1, 2, 0), x.transpose(1, 2, 0, 3), transposed)
  return x_grad, jnp.flip(flipped, (1, 2)).transpose(1, 2, 3, 0)


canonical_conv.defvjp(_canonical_conv_forward, _canonical_conv_backward)


def same_padding(kernel_shape):
  return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel_shape[:2])


def canonical_conv2d(x, kernel, bias=None):
  """A drop-in for ``iresflow.nn.spectral.conv2d`` (stride 1, ``SAME``) built on :func:`canonical_conv`."""
  y = canonical_conv(x, kernel.astype(x.dtype), same_padding(kernel.shape))
  return y if bias is None else y + bias.astype(x.dtype)


def interleaved_medians(calls: dict, repeats: int) -> dict:
  """Median seconds of each of ``calls`` (name -> ``fn(i)``), timed in turns after one warm-up call each."""
  return {name: float(np.median(t)) for name, t in bench.interleaved_times(calls, 1, repeats).items()}


def isolated(quick: bool) -> dict:
  n, size, channels, hidden, blocks = (4, 6, 2, 8, 2) if quick else (64, 14, 4, 64, 8)
  keys = jax.random.split(jax.random.key(0), 4)
  x = jax.random.normal(keys[0], (n, size, size, channels))
  kernels = [0.05 * jax.random.normal(keys[1], (blocks, 3, 3, channels, hidden)),
             0.05 * jax.random.normal(keys[2], (blocks, 1, 1, hidden, hidden)),
             0.05 * jax.random.normal(keys[3], (blocks, 3, 3, hidden, channels))]

  def loss(conv, scan, x, kernels):
    def block(x, block_kernels):
      h = x
      for kernel in block_kernels:
        h = conv(jax.nn.silu(h), kernel, same_padding(kernel.shape))
      return x + h
    if scan:
      x, _ = jax.lax.scan(lambda x, ks: (block(x, ks), None), x, kernels)
    else:
      for i in range(blocks):
        x = block(x, [k[i] for k in kernels])
    return jnp.sum(x ** 2)

  grads = {f"{name}/{'scan' if scan else 'unrolled'}": jax.jit(jax.grad(functools.partial(loss, conv, scan), (0, 1)))
           for name, conv in (("jax", jax_conv), ("canonical", canonical_conv)) for scan in (True, False)}
  reference = jax.tree.leaves(grads["jax/unrolled"](x, kernels))
  scale = max(float(jnp.max(jnp.abs(r))) for r in reference)
  differences = {name: max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(g(x, kernels)), reference))
                 / scale for name, g in grads.items()}
  medians = interleaved_medians({name: lambda i, g=g: jax.block_until_ready(g(x, kernels))
                                 for name, g in grads.items()}, 3 if quick else 7)
  return {"ms": {k: 1e3 * v for k, v in medians.items()}, "max_difference_relative_to_largest_gradient": differences}


def training_steps(quick: bool) -> dict:
  import iresflow.nn.residual

  image = bench.workloads(quick)[1]
  result = {}
  for gradient in ("backprop", "neumann"):
    sides = {}
    for name, conv in (("jax", None), ("canonical", canonical_conv2d)):
      with mock.patch.object(iresflow.nn.residual, "conv2d", conv or iresflow.nn.residual.conv2d):
        for unroll in (False, True):
          side = bench.IresflowSide(image, gradient, unroll=unroll)
          side.step(0)  # traced and compiled here, with the convolution patched in
          sides[f"{name}/{'unrolled' if unroll else 'scan'}"] = side
    steps = {name: side.step for name, side in sides.items()}
    result[gradient] = {k: 1e3 * v for k, v in interleaved_medians(steps, 2 if quick else 5).items()}
    print(gradient, {k: round(v, 1) for k, v in result[gradient].items()}, flush=True)
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds; a smoke test)")
  parser.add_argument("--output", help="the JSON file (default docs/conv_in_loops.json; --quick writes none)")
  args = parser.parse_args()
  start = time.perf_counter()
  results = {"command": "python benchmarks/conv_in_loops.py" + (" --quick" if args.quick else ""),
             "machine": f"{os.cpu_count()} CPU cores ({bench.cpu_model()}), "
                        f"JAX {jax.__version__} ({jax.default_backend()})",
             "isolated": isolated(args.quick)}
  print("isolated", json.dumps(results["isolated"], indent=1), flush=True)
  results["training_step_ms"] = training_steps(args.quick)
  results["wall_s"] = time.perf_counter() - start
  bench.save_results(results, args.output, args.quick, "conv_in_loops")


if __name__ == "__main__":
  main()
