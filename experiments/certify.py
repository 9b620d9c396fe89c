"""Certify a trained run: ``python experiments/certify.py --workdir DIR``.

Rebuilds the model from ``DIR/model.json``, loads the newest checkpoint in ``DIR/checkpoints`` and
prints, per block, a rigorous upper bound on ``Lip(g)`` (float64 SVD / FFT bounds of every layer
times the activations' constants) beside the power-iteration estimate, with a verdict. Writes
``DIR/certificate.json``. Exits 1 if any block is not certified.

The certified parameters are the EMA ones when the run used EMA (those are what evaluation uses),
with the spectral state stored in the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import ml_collections
from absl import logging

import iresflow
from iresflow.train import build_model
from iresflow.train.checkpoint import Checkpointer


def load_variables(workdir: str) -> tuple[object, dict, int]:
  """``(model, variables, step)`` of the newest checkpoint in ``workdir``."""
  spec_path = os.path.join(workdir, "model.json")
  if not os.path.exists(spec_path):
    raise FileNotFoundError(f"workdir: {spec_path} not found; is {workdir!r} a training workdir?")
  with open(spec_path) as f:
    spec = json.load(f)
  config = ml_collections.ConfigDict({"task": spec["task"], "model": spec["model"]})
  model = build_model(config, tuple(spec["data_shape"]), spec["num_classes"])
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
  step = checkpointer.latest_step()
  if step is None:
    raise FileNotFoundError(f"workdir: no checkpoint in {checkpointer.directory}")
  state = checkpointer.restore_raw(step)
  checkpointer.close()
  params = state["ema_params"] if spec.get("ema") else state["params"]
  return model, {"params": params, "spectral": state["spectral"]}, step


def main() -> int:
  logging.set_verbosity(logging.WARNING)
  parser = argparse.ArgumentParser(description="Certify Lip(g) < 1 for every block of a trained run.")
  parser.add_argument("--workdir", required=True)
  args = parser.parse_args()
  try:
    model, variables, step = load_variables(args.workdir)
  except FileNotFoundError as error:
    print(f"certify: {error}", file=sys.stderr)
    return 2
  certificate = iresflow.certify(model, variables)
  print(f"checkpoint step {step} in {args.workdir}")
  print(certificate.table())
  with open(os.path.join(args.workdir, "certificate.json"), "w") as f:
    json.dump(certificate.to_dict(), f, indent=2)
  return 0 if certificate.certified else 1


if __name__ == "__main__":
  sys.exit(main())
