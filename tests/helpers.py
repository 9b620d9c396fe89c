"""Small contractive residual functions with known Lipschitz bounds, shared by the tests."""

from __future__ import annotations

import contextlib
import pathlib
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np


def conv(x: jax.Array, kernel: jax.Array, stride: int = 1, padding="SAME") -> jax.Array:
  """NHWC convolution with an HWIO kernel."""
  return jax.lax.conv_general_dilated(
      x, kernel, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def circular_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Circular ('wrap') convolution with output at the input's size, for odd kernels."""
  kh, kw = kernel.shape[:2]
  padded = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)), mode="wrap")
  return conv(padded, kernel, padding="VALID")


def materialize(linear_fn, input_shape) -> np.ndarray:
  """The matrix (out_dim, in_dim) of a linear function of one example, in float64 on the host."""
  zeros = jnp.zeros(input_shape, jnp.float32)
  jac = jax.jacfwd(linear_fn)(zeros)
  out_dim = int(np.prod(jac.shape[: jac.ndim - len(input_shape)]))
  return np.asarray(jac, np.float64).reshape(out_dim, -1)


def exact_norm(linear_fn, input_shape) -> float:
  return float(np.linalg.svd(materialize(linear_fn, input_shape), compute_uv=False)[0])


def contractive_mlp(key, dim: int, hidden: int, lipschitz: float):
  """g(x) = W2 elu(W1 x) with ||W1|| = ||W2|| = sqrt(L) exactly, so Lip(g) <= L."""
  k1, k2 = jax.random.split(key)
  w1 = jax.random.normal(k1, (dim, hidden))
  w2 = jax.random.normal(k2, (hidden, dim))
  scale = np.sqrt(lipschitz)
  w1 = w1 * scale / np.linalg.svd(np.asarray(w1), compute_uv=False)[0]
  w2 = w2 * scale / np.linalg.svd(np.asarray(w2), compute_uv=False)[0]
  return lambda x: jax.nn.elu(x @ w1) @ w2


def contractive_conv_net(key, shape, hidden: int, lipschitz: float):
  """g(x) = K2 * elu(K1 * x) (3x3 SAME convs) with exact operator norms sqrt(L) at ``shape``.

  Args:
    shape: per-example input shape (H, W, C).
  """
  h, w, c = shape
  k1, k2 = jax.random.split(key)
  kern1 = jax.random.normal(k1, (3, 3, c, hidden)) * 0.3
  kern2 = jax.random.normal(k2, (3, 3, hidden, c)) * 0.3
  scale = np.sqrt(lipschitz)
  kern1 = kern1 * scale / exact_norm(lambda u: conv(u[None], kern1)[0], shape)
  kern2 = kern2 * scale / exact_norm(lambda u: conv(u[None], kern2)[0], (h, w, hidden))
  return lambda x: conv(jax.nn.elu(conv(x, kern1)), kern2)


@contextlib.contextmanager
def mock_tfds(num_examples: int, **kwargs):
  """``tfds.testing.mock_data`` whose data sources also answer ``__getitems__`` (bulk reads).

  TFDS 4.9.10's mock installs ``__getitems__`` as a ``functools.partial`` of a function that expects
  ``self`` first, so a bulk read passes the keys as ``self`` and fails; this replaces that function
  with one that takes the keys alone.
  """
  import tensorflow_datasets as tfds
  from tensorflow_datasets.testing import mocking

  def getitems(record_keys, generator, serialized=False):
    assert not serialized
    return [generator[key] for key in record_keys]

  with mock.patch.object(mocking, "_getitems", getitems), tfds.testing.mock_data(num_examples=num_examples, **kwargs):
    yield


def subprocess_env(root) -> dict:
  """The environment for a test's subprocess: this one's (the session settings of conftest.py), the
  repository on PYTHONPATH, and no forced device count (the subprocess sets its own)."""
  import os
  env = {**os.environ, "PYTHONPATH": str(root)}
  flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join(flags)
  return env


def jit_init(model, key, x, **kwargs):
  """``model.init(key, x, **kwargs)`` under ``iresflow.core.jit_run_once``: one compiled program, where
  eager init dispatches every operation outside the scanned stages separately and compiles each
  stage's scan on its own (on CPU compiled without LLVM's optimisation passes, as the library does)."""
  from iresflow.core import jit_run_once
  return jit_run_once(lambda key, x: model.init(key, x, **kwargs))(key, x)


def shared_across_workers(tmp_path_factory, name: str, make) -> pathlib.Path:
  """A folder that ``make(folder)`` fills once per test session, whichever pytest-xdist worker asks first.

  A module-scoped fixture runs once in every worker that runs one of its tests (``--dist worksteal``
  spreads a module's tests over the workers); this runs ``make`` once in all, under a file lock in
  the session's shared temporary folder. The folder is marked ``done`` once ``make`` returns; a
  worker that finds it unmarked (``make`` raised) runs ``make`` again in a fresh folder.
  """
  import fcntl
  import shutil

  root = tmp_path_factory.getbasetemp()
  root = root.parent if root.name.startswith("popen-gw") else root  # the folder all workers share
  folder = pathlib.Path(root) / f"shared-{name}"
  with open(pathlib.Path(root) / f"shared-{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (folder / "done").exists():
      shutil.rmtree(folder, ignore_errors=True)
      folder.mkdir()
      make(folder)
      (folder / "done").touch()
  return folder
