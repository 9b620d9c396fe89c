"""Certify a trained run: ``python experiments/certify.py --workdir DIR``.

Rebuilds the model from ``DIR/model.json`` and the variables the trainer evaluated from the newest
checkpoint in ``DIR/checkpoints`` (``iresflow.train.load_variables``: the EMA parameters when the run
used EMA, with the spectral state refreshed for them exactly as the trainer does), and prints, per
block, a rigorous upper bound on ``Lip(g)`` (float64 SVD / FFT bounds of every layer times the
activations' constants) beside the norm-estimate product, with a verdict. Writes
``DIR/certificate.json`` (the same certificate the trainer wrote). Exits 1 if any block is not certified.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from absl import logging

import iresflow
from iresflow.train import load_variables


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
