"""Training in bfloat16, evaluating in float32: does the precision policy cost test bits/dim? (issue #15)

The digits density config (experiments/configs/digits_flow.py) trains once per seed and per policy:

* ``float32``: the default, ``g`` and the series at JAX's default matmul precision in float32;
* ``bfloat16``: ``config.estimator.compute_dtype='bfloat16'``, ``g``, its vector-Jacobian products and
  the probes in bfloat16, the series summed in float32 (``iresflow.core.PowerSeries``).

Everything else is shared by the two runs of a seed: initialisation, data order, probes (drawn in
float32 and rounded). Both are evaluated the same way, in float32 at 'highest' matmul precision with
the exact log-det on the 360 test digits (17 levels), after the trainer's 10 norm-estimator refresh
steps, and certified (``iresflow.certify``). The spectral-norm estimates, the inverse and the
certificate run at 'highest' in float32 under either policy. On a CPU every matmul precision setting
computes in float32, so the TF32 / bfloat16 *precision* settings cannot change a number here; the
bfloat16 *compute dtype* can, and is what this measures. Writes
``precision_policy.{md,json}`` (``--docs-dir docs``: the committed ones).

    python experiments/precision_policy.py --docs-dir docs          # 3 seeds x 2 policies, ~12 min on 2 CPUs
    python experiments/precision_policy.py --quick  # tiny, under 10 s on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import jax
import numpy as np

from iresflow.train import load_config, metrics_on_test_set, setup_training, sharding
from iresflow.train.steps import Divergence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLICIES = {"float32": None, "bfloat16": "bfloat16"}


def config_for(policy: str, seed: int, quick: bool):
  config = load_config(os.path.join(ROOT, "experiments", "configs", "digits_flow.py"))
  config.seed = seed
  config.estimator.compute_dtype = POLICIES[policy]
  if quick:
    config.model.stages = (1,)
    config.model.residual.hidden = 4
    config.num_steps, config.warmup_steps, config.batch_size = 3, 1, 8
    config.eval_batch_size, config.num_eval_examples = 8, 16
  return config


def train_and_test(config) -> dict:
  """Trains ``config`` (no checkpoints) and returns test bits/dim, certificate and step time."""
  training = setup_training(config)
  state = training.state
  divergence = jax.device_put(Divergence.none(), sharding.replicated(training.mesh))  # as the trainer's
  state, divergence, _ = training.train_step(state, divergence, training.device_batch(0))  # compiles
  jax.block_until_ready(state)
  start = time.perf_counter()
  for step in range(1, config.num_steps):
    state, divergence, _ = training.train_step(state, divergence, training.device_batch(step))
  jax.block_until_ready(state)
  seconds = time.perf_counter() - start
  if int(divergence.step) >= 0:
    raise RuntimeError(f"{config.estimator.compute_dtype}: step {int(divergence.step)} was not finite")
  results, _, certificate = metrics_on_test_set(training, state)
  return {"test_bits_per_dim": results["test_bits_per_dim"],
          "standard_error": results["test_bits_per_dim_standard_error"],
          "certified": bool(certificate.certified), "max_lipschitz_bound": float(certificate.max_lipschitz_bound),
          "ms_per_step": 1000 * seconds / max(config.num_steps - 1, 1), "training_estimator":
          training.task.estimator.describe(), "test_estimator": training.task.eval_estimator.describe()}


def summarize(runs: dict[str, list[dict]]) -> dict:
  """Means over seeds, and the bfloat16 - float32 difference against the seed-to-seed noise.

  The tolerance: the difference of the two means may not exceed twice its standard error from the
  seed-to-seed spread, ``2 sqrt(s_f32^2 / n + s_bf16^2 / n)`` (a two-sample test at about 95%).
  """
  summary = {}
  for policy, rows in runs.items():
    values = np.array([row["test_bits_per_dim"] for row in rows])
    spread = float(values.std(ddof=1)) if len(values) > 1 else None  # one seed (--quick): no spread
    summary[policy] = {"mean": float(values.mean()), "seed_sd": spread,
                       "ms_per_step": float(np.mean([row["ms_per_step"] for row in rows])),
                       "all_certified": all(row["certified"] for row in rows)}
  n = len(runs["float32"])
  paired = np.array([half["test_bits_per_dim"] - full["test_bits_per_dim"]
                     for full, half in zip(runs["float32"], runs["bfloat16"])])
  difference = summary["bfloat16"]["mean"] - summary["float32"]["mean"]
  tolerance = None
  if n > 1:
    tolerance = 2 * math.sqrt((summary["float32"]["seed_sd"] ** 2 + summary["bfloat16"]["seed_sd"] ** 2) / n)
  summary["difference"] = {"bfloat16_minus_float32": float(difference), "tolerance": tolerance,
                           "paired": paired.tolist(),
                           "within_noise": None if tolerance is None else bool(difference <= tolerance)}
  return summary


def write_table(results: dict, path: str) -> None:
  summary = results["summary"]
  lines = ["# Training precision policy: bfloat16 g and series vs float32 (issue #15)", "",
           f"Command: `python experiments/precision_policy.py{' --quick' if results['quick'] else ' --docs-dir docs'}` "
           f"(numbers in precision_policy.json; {results['backend']}). The digits flow "
           f"({results['config']}, {results['num_steps']} steps), trained per seed with each policy from the same "
           "initialisation, data order and probes; test bits/dim in the 17-level space on the 360 test digits, "
           "evaluated in float32 at 'highest' with the exact log-det; every model certified.", "",
           "| training policy | test bits/dim per seed | mean ± seed s.d. | ms/step (2 CPUs) | all certified |",
           "|---|---|---:|---:|---|"]
  for policy in POLICIES:
    per_seed = ", ".join(f"{row['test_bits_per_dim']:.4f}" for row in results["runs"][policy])
    s = summary[policy]
    spread = "n/a" if s["seed_sd"] is None else f"{s['seed_sd']:.4f}"
    lines.append(f"| {policy} | {per_seed} | {s['mean']:.4f} ± {spread} | {s['ms_per_step']:.0f} | "
                 f"{'yes' if s['all_certified'] else 'NO'} |")
  d = summary["difference"]
  verdict = {None: "n/a (one seed)", True: "yes", False: "NO"}[d["within_noise"]]
  tolerance = "n/a" if d["tolerance"] is None else f"{d['tolerance']:.4f}"
  lines += ["", f"bfloat16 - float32: {d['bfloat16_minus_float32']:+.4f} bits/dim (per seed: "
            f"{', '.join(f'{p:+.4f}' for p in d['paired'])}); tolerance, 2 x the standard error of the difference "
            f"from the seed spread: {tolerance}; within noise: {verdict}."]
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--output-dir", "--docs-dir", dest="output_dir",
                      default=os.path.join("workdirs", "precision_policy"),
                      help="results folder (--docs-dir docs: the committed results)")
  args = parser.parse_args()
  seeds = range(1 if args.quick else args.seeds)
  runs = {policy: [] for policy in POLICIES}
  for seed in seeds:
    for policy in POLICIES:
      row = train_and_test(config_for(policy, seed, args.quick))
      runs[policy].append({"seed": seed, **row})
      print(f"seed {seed} {policy}: {row['test_bits_per_dim']:.4f} bits/dim, certified {row['certified']}, "
            f"{row['ms_per_step']:.0f} ms/step", flush=True)
  config = config_for("float32", 0, args.quick)
  results = {"backend": jax.default_backend(), "config": "experiments/configs/digits_flow.py",
             "num_steps": config.num_steps, "quick": args.quick, "runs": runs, "summary": summarize(runs)}
  os.makedirs(args.output_dir, exist_ok=True)
  with open(os.path.join(args.output_dir, "precision_policy.json"), "w") as f:
    json.dump(results, f, indent=2)
  write_table(results, os.path.join(args.output_dir, "precision_policy.md"))


if __name__ == "__main__":
  main()
