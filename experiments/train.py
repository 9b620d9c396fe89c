"""Train and evaluate an i-ResNet: ``python experiments/train.py --config CONFIG --workdir DIR``.

Any config key can be overridden, e.g. ``--config.num_steps=200 --config.model.coeff=0.7``. Running
again with the same ``--workdir`` resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from iresflow.train import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (experiments/configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and figures.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax and JAX log every checkpoint at INFO
  results = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  print(json.dumps({k: v for k, v in results.items()}, indent=2))


if __name__ == "__main__":
  app.run(main)
