"""What each layer of the package loads: the core is JAX only; Flax only where modules live."""

import json
import subprocess
import sys

import pytest

HEAVY = ("flax", "matplotlib", "orbax", "tensorflow_datasets", "sklearn", "tqdm", "ml_collections", "optax")


def _loaded_after(statement: str) -> set[str]:
  code = (f"import sys\n{statement}\n"
          f"import json; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("statement,allowed", [
    ("import iresflow, iresflow.core", set()),
    ("import iresflow.core.spectral, iresflow.core.fixed_point, iresflow.core.logdet", set()),
    ("from iresflow.core import PowerSeries, FixedPointSolver, fixed_point_inverse", set()),
    ("import iresflow.nn, iresflow.models", {"flax"}),
    ("import iresflow.train.state", {"flax", "optax"}),
    ("import iresflow.train.plots", set()),
    ("import iresflow.data", set()),
])
def test_imports_load_only_what_they_need(statement, allowed):
  loaded = _loaded_after(statement)
  assert loaded <= allowed, f"{statement!r} loaded {sorted(loaded - allowed)}"


def test_certify_is_loaded_on_first_use():
  assert _loaded_after("import iresflow; iresflow.certify") == {"flax"}
  assert "flax" not in _loaded_after("import iresflow; hasattr(iresflow, '__version__')")


def test_core_states_its_public_names():
  import iresflow.core
  for name in iresflow.core.__all__:
    assert hasattr(iresflow.core, name), name
  import iresflow.train
  for name in iresflow.train.__all__:
    assert getattr(iresflow.train, name) is not None, name


def test_no_module_starts_a_jax_backend_at_import():
  # jax.distributed.initialize() (multi-host, TPU pods, SLURM) must run before any backend starts, and
  # experiments/train.py imports the package first (issue #28): every module, imported in a fresh
  # process, leaves the backends alone.
  code = """
import importlib, json, pkgutil
import iresflow
from jax._src import xla_bridge
names = sorted(m.name for m in pkgutil.walk_packages(iresflow.__path__, "iresflow."))
imported, first = [], None
for name in names:
  importlib.import_module(name)
  imported.append(name)
  if xla_bridge.backends_are_initialized():
    first = name
    break
print(json.dumps({"imported": imported, "first": first}))
"""
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  report = json.loads(out.stdout.strip().splitlines()[-1])
  assert report["first"] is None, f"importing {report['first']} starts a JAX backend"
  assert {"iresflow.nn.activations", "iresflow.train.trainer", "iresflow.models.flow"} <= set(report["imported"])
