"""Run as one of N processes (jax.distributed on CPU, loopback): ``train_and_evaluate`` on a tiny config.

    python multiprocess_check.py PROCESS_ID NUM_PROCESSES PORT WORKDIR OUTPUT.json

Every process runs the whole job on the shared WORKDIR; each feeds its slice of every global batch
and of every evaluation batch. Processes other than 0 run with ``open`` guarded: writing any file in
WORKDIR outside ``checkpoints/`` (which Orbax coordinates across processes) raises. Each process
writes the results it returned to OUTPUT.json (outside WORKDIR). With NUM_PROCESSES=1 the same
script is the single-process reference.
"""

import builtins
import json
import os
import sys

process_id, num_processes, port, workdir, output = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4],
                                                    sys.argv[5])
from iresflow.train import sharding  # noqa: E402

if num_processes > 1:
  sharding.initialize_distributed(coordinator_address=f"127.0.0.1:{port}", num_processes=num_processes,
                                  process_id=process_id)

import jax  # noqa: E402

from iresflow.train import default_config, train_and_evaluate  # noqa: E402


def guard_writes(root: str) -> None:
  """Makes ``open`` for writing under ``root`` (except Orbax's ``checkpoints/``) an error."""
  root = os.path.abspath(root)
  real_open = builtins.open

  def guarded(file, mode="r", *args, **kwargs):
    path = os.path.abspath(os.fspath(file)) if isinstance(file, (str, bytes, os.PathLike)) else ""
    if (path.startswith(root + os.sep) and not path.startswith(os.path.join(root, "checkpoints") + os.sep)
        and any(flag in mode for flag in "wax+")):
      raise AssertionError(f"process {jax.process_index()} wrote {path}")
    return real_open(file, mode, *args, **kwargs)

  builtins.open = guarded


def main():
  config = default_config()
  config.model = dict(stages=(1, 1), residual=dict(hidden=8, constraint=dict(coeff=0.9)))
  config.batch_size = 16
  config.num_steps = 4
  config.log_every = 2
  config.checkpoint_every = 2
  config.progress = False
  config.eval_batch_size = 32
  config.num_eval_examples = 48  # one full and one padded evaluation batch
  config.num_samples = 4
  config.warmup_steps = 0
  config.eval_refresh_iterations = 1
  config.estimator.n_terms = 3
  config.eval_estimator = dict(kind="series", n_terms=3, n_probes=1)
  if jax.process_index() != 0:
    guard_writes(workdir)
  results = train_and_evaluate(config, workdir)
  with open(output, "w") as f:
    json.dump({"results": results, "devices": jax.device_count(), "processes": jax.process_count()}, f)


if __name__ == "__main__":
  main()
