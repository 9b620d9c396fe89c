"""What the benchmark scripts share: the machine's description, a resident-memory meter, compile time.

The scripts in this folder run as scripts (``python benchmarks/<name>.py``), so Python puts this
folder on the module path and they import this module as ``import common``.
"""

from __future__ import annotations

import os
import platform
import threading
import time


def cpu_model() -> str:
  """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
  try:
    with open("/proc/cpuinfo") as f:
      return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    return platform.processor() or platform.machine()


def machine_description(*peers: str) -> str:
  """Cores, CPU model, accelerator, and the versions of JAX, Flax and the named ``peers`` (importable names)."""
  import importlib

  import flax
  import jax

  accelerator = jax.devices()[0].device_kind if jax.default_backend() != "cpu" else "none"
  versions = [f"JAX {jax.__version__} ({jax.default_backend()})", f"Flax {flax.__version__}"]
  for name in peers:
    module = importlib.import_module(name)
    versions.append(f"{name} {getattr(module, '__version__', '?')}")
  return (f"{os.cpu_count()} CPU cores ({cpu_model()}), accelerator: {accelerator}; "
          f"Python {platform.python_version()}, " + ", ".join(versions))


class PeakResident:
  """Samples the resident set size every millisecond in a thread; ``peak`` is the largest seen (bytes)."""

  def __init__(self):
    self.peak = self._read()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  @staticmethod
  def _read() -> int:
    with open("/proc/self/statm") as f:
      return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

  def _run(self):
    while not self._stop.is_set():
      self.peak = max(self.peak, self._read())
      time.sleep(0.001)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, self._read())


def compile_seconds(n_blocks: int, hidden: int, image: int, unroll: bool | None = False) -> float:
  """Compile time of a density training step of a one-stage ``IResNetFlow`` on ``image x image x 1`` inputs.

  Args:
    n_blocks: blocks in the stage.
    hidden: channels of each block's ``g``.
    image: input height and width.
    unroll: blocks and series terms unrolled (True), looped (False), or the backend's default (None).
  """
  import jax
  import jax.numpy as jnp
  import optax

  from iresflow.models import IResNetFlow
  from iresflow.nn import ExactLogDet, PowerSeries, ResidualSpec
  from iresflow.train import TrainState
  from iresflow.train.steps import make_train_step
  from iresflow.train.tasks import DensityPreprocessing, DensityTask

  model = IResNetFlow(data_shape=(image, image, 1), stages=(n_blocks,), residual=ResidualSpec(hidden=hidden),
                      unroll_blocks=unroll)
  x = jnp.zeros((16, image, image, 1), jnp.uint8)
  task = DensityTask(model, DensityPreprocessing(256), PowerSeries(n_terms=5, unroll=unroll), ExactLogDet())
  variables = jax.jit(task.init_variables)(jax.random.key(0), (x,))
  optimizer = optax.adam(1e-3)
  state = TrainState.create(variables, optimizer)
  step = make_train_step(task, optimizer, 0.999, jax.random.key(2))
  lowered = jax.jit(step).lower(state, (x,))
  start = time.perf_counter()
  lowered.compile()
  return time.perf_counter() - start


def write_results(folder: str, name: str, results: dict, markdown: str) -> None:
  """Writes ``results`` to ``folder/name.json`` and ``markdown`` to ``folder/name.md``."""
  import json

  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, f"{name}.json"), "w") as f:
    json.dump(results, f, indent=1)
  with open(os.path.join(folder, f"{name}.md"), "w") as f:
    f.write(markdown)
