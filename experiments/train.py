"""Train and evaluate an i-ResNet: ``python experiments/train.py --config CONFIG --workdir DIR``.

Any config key can be overridden, e.g. ``--config.num_steps=200 --config.model.residual.constraint.coeff=0.7``. Running
again with the same ``--workdir`` resumes from its last checkpoint.

Several hosts: start the same command on every host with ``--distributed`` (``jax.distributed``
detects TPU pods and SLURM by itself) or with ``--coordinator_address=HOST:PORT --num_processes=N
--process_id=I``; the workdir must be on storage all hosts share. Each process feeds its slice of
every global batch.
"""

from __future__ import annotations

import ast
import json
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from iresflow.data.images import DatasetNotFoundError
from iresflow.train import ConfigError, TrainingDivergedError, sharding, train_and_evaluate

# The user's input or the run, not a bug: the message alone, no traceback.
EXPECTED_ERRORS = (ConfigError, DatasetNotFoundError, TrainingDivergedError)

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (experiments/configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and figures.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (auto-detection).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0, for multi-host runs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
flags.mark_flags_as_required(["config", "workdir"])


def _fail(message: str, status: int) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(status)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a wrong flag or ``--config.KEY=VALUE`` override in one line, not a traceback."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    _fail(f"{error}\nPass --helpshort or --helpfull to see help on flags.", 2)
  except (AttributeError, KeyError, TypeError, ValueError) as error:  # raised by ml_collections' overrides
    message = str(error.args[0]) if error.args else str(error)
    if message[:1] in "'\"":  # a KeyError's message arrives as its repr
      try:
        message = ast.literal_eval(message)
      except (ValueError, SyntaxError):
        pass
    overrides = " ".join(arg for arg in argv[1:] if arg.startswith("--config."))
    _fail(f"a --config override is wrong ({overrides}): {' '.join(message.split())}", 2)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax and JAX log every checkpoint at INFO
  if _DISTRIBUTED.value or _COORDINATOR.value:
    sharding.initialize_distributed(coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                                    process_id=_PROCESS_ID.value, force=True)
  try:
    config = _CONFIG.value
    config.get("task")  # a config file that failed to load says so on first use
  except OSError as error:
    _fail(f"--config: {' '.join(str(error).split())}", 2)
  try:
    results = train_and_evaluate(config, _WORKDIR.value)
  except EXPECTED_ERRORS as error:
    _fail(str(error), 2 if isinstance(error, ConfigError) else 1)
  if jax.process_index() == 0:  # only process 0 writes files
    written = sorted(name for name in os.listdir(_WORKDIR.value) if name.endswith((".json", ".jsonl", ".png")))
    print(f"in {_WORKDIR.value}: {', '.join(written)}; checkpoints in {os.path.join(_WORKDIR.value, 'checkpoints')}")
  print(json.dumps({k: v for k, v in results.items()}, indent=2))  # last: the results, as JSON


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
