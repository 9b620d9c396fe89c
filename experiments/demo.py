"""The demo job (``make demo``): an i-ResNet flow on scikit-learn's 8x8 digits, a few minutes on 2 CPUs.

Trains ``experiments/configs/digits_flow.py`` from scratch in ``workdirs/demo``, then prints test
bits/dim (exact log-det), the Lipschitz certificate of every block and the reconstruction error of
the inverse, and writes ``samples.png`` and ``reconstructions.png`` there.

    python experiments/demo.py                        # what `make demo` runs
    python experiments/demo.py --docs-dir docs/demo   # also copies results.json, certificate.json and
                                                      # samples.png into docs/demo (docs/results.md's numbers)
    python experiments/demo.py --tiny --steps 3 --workdir /tmp/demo   # seconds (a test runs this)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

from absl import logging

from iresflow.train import load_config, train_and_evaluate

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
  logging.set_verbosity(logging.WARNING)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default=os.environ.get("DEMO_WORKDIR",
                                                         os.path.join(os.path.dirname(HERE), "workdirs", "demo")))
  parser.add_argument("--steps", type=int, default=None, help="training steps (default: the config's 1,500)")
  parser.add_argument("--tiny", action="store_true", help="one block per stage, 8 channels, 32 test images")
  parser.add_argument("--docs-dir", default=None, help="copy results.json, certificate.json, samples.png here")
  args = parser.parse_args()
  config = load_config(os.path.join(HERE, "configs", "digits_flow.py"))
  if args.steps:
    config.num_steps = args.steps
  if args.tiny:
    config.model.stages = (1, 1)
    config.model.residual.hidden = 8
    config.num_eval_examples = config.eval_batch_size = 32
    config.num_samples = 4
    config.eval_refresh_iterations = 1
  workdir = args.workdir
  shutil.rmtree(workdir, ignore_errors=True)
  print(f"Training an i-ResNet flow on 8x8 digits for {config.num_steps} steps in {workdir} ...")
  results = train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "certificate.json")) as f:
    certificate = json.load(f)
  print()
  print(f"test bits/dim: {results['test_bits_per_dim']:.4f}  ({results['estimator']}; 17-level digits, "
        f"uniform = log2(17) = 4.09)")
  print(f"reconstruction: max |x - F^-1(F(x))| = {results['reconstruction_max_abs_error']:.2e} on "
        f"{config.eval_batch_size} test images; {results['inverse_not_converged']} did not converge")
  verdict = "all certified < 1" if certificate["certified"] else "NOT certified"
  print(f"certificate: {len(certificate['blocks'])} blocks, max Lip(g) bound "
        f"{certificate['max_lipschitz_bound']:.4f} -> {verdict}")
  for block in certificate["blocks"]:
    print(f"  {block['name']:<28} bound {block['lipschitz_bound']:.5f}  estimate {block['lipschitz_estimate']:.5f}")
  print(f"samples: {os.path.join(workdir, 'samples.png')} ({results['samples_not_converged']} not converged)")
  if args.docs_dir:
    os.makedirs(args.docs_dir, exist_ok=True)
    for name in ("results.json", "certificate.json", "samples.png"):
      shutil.copy(os.path.join(workdir, name), os.path.join(args.docs_dir, name))
  return 0 if certificate["certified"] and results["inverse_not_converged"] == 0 else 1


if __name__ == "__main__":
  sys.exit(main())
