"""Test-session settings.

JAX's persistent compilation cache is shared by the test workers and the subprocesses they start
(training runs, multi-process checks), so a program compiled once in a session is not compiled again
(e.g. the killed and the resumed training run in ``test_kill_resume.py``). It lives in the
repository's ignored ``.cache/`` folder; a clean clone starts empty. Set ``IRESFLOW_TEST_JAX_CACHE=0``
to run without it.
"""

import os
import pathlib

if os.environ.get("IRESFLOW_TEST_JAX_CACHE", "1") != "0":
  _cache = pathlib.Path(__file__).resolve().parents[1] / ".cache" / "jax-tests"
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_cache))
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
