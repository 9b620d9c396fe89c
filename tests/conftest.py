"""Test-session settings, exported through the environment so the subprocesses the tests start
(training runs, multi-process checks) inherit them.

* JAX's persistent compilation cache is shared by the test workers and their subprocesses, so a
  program compiled once in a session is not compiled again (e.g. the killed and the resumed training
  run in ``test_kill_resume.py``). Every program goes in, however fast it compiled: a tiny training
  run compiles 60-80 programs, most in < 0.5 s, and reading them back costs a fraction of compiling them.
  It lives in the repository's ignored ``.cache/`` folder; a clean clone starts empty.
  ``IRESFLOW_TEST_JAX_CACHE=0`` turns it off.
* XLA:CPU compiles for compile speed: LLVM's optimisation level 0 without its expensive passes
  (``--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true``, what
  ``jax_disable_most_optimizations`` sets) and the classic fusion code generator instead of the
  newer fusion emitters (``--xla_cpu_use_fusion_emitters=false``). On these small models
  compilation, not execution, is most of a test's time (measurements in docs/design_notes.md). They
  change how float32 sums are rounded, not what a test checks. ``IRESFLOW_TEST_XLA_OPT=1`` keeps
  XLA's defaults: ``make test`` runs the tests marked ``default_xla`` that way, in a second pass, so
  that a defect only XLA's default code generator shows can fail the suite.
"""

import os
import pathlib

if os.environ.get("IRESFLOW_TEST_JAX_CACHE", "1") != "0":
  _cache = pathlib.Path(__file__).resolve().parents[1] / ".cache" / "jax-tests"
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_cache))
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

if os.environ.get("IRESFLOW_TEST_XLA_OPT", "0") != "1":
  for _flag in ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true",
                "--xla_cpu_use_fusion_emitters=false"):
    if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
      os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_flag}".strip()


import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """Drops JAX's in-memory caches of compiled programs after each test module, so that a worker's
  memory does not grow with every program it has compiled (they stay in the persistent cache)."""
  yield
  import jax
  jax.clear_caches()
