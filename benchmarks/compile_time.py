"""Compile time vs depth: identical blocks under ``nn.scan`` are traced once.

Measures the rolled configuration (``unroll_blocks=False``, ``PowerSeries(unroll=False)``), the
default on GPU/TPU; on CPU the default unrolls (``iresflow.core.loops``) and compile time grows with
depth (docs/vs_normflows.md reports that one).

Compiles the jitted maximum-likelihood train step (forward, series log-det, gradient, Adam update,
spectral-state update) of an ``IResNetFlow`` with one stage of N blocks, for several N, and reports
compile time relative to the shallowest. Writes ``compile_time.md`` into ``--output-dir``
(default ``workdirs/compile_time``; ``--docs-dir docs`` for the committed results).

    python benchmarks/compile_time.py            # 4, 8, 32, 64 blocks
    python benchmarks/compile_time.py --quick    # 2 and 4 blocks, tiny model (seconds; used by a test)
"""

from __future__ import annotations

import argparse
import os


from common import compile_seconds, machine_description  # this folder's shared helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
  parser.add_argument("--output-dir", "--docs-dir", dest="output_dir",
                      default=os.path.join("workdirs", "compile_time"),
                      help="results folder (--docs-dir docs: the committed results)")
  args = parser.parse_args()
  depths, hidden, image = ((2, 4), 4, 8) if args.quick else ((4, 8, 32, 64), 32, 16)
  times = {n: compile_seconds(n, hidden, image) for n in depths}
  base = times[depths[0]]
  rows = [f"| {n} | {t:.2f} | {t / base:.2f} |" for n, t in times.items()]
  text = "\n".join([
      "# Compile time vs depth",
      "",
      f"Command: `python benchmarks/compile_time.py{' --quick' if args.quick else ' --docs-dir docs'}`. Machine: "
      f"{machine_description()}.",
      f"Jitted train step of a one-stage `IResNetFlow` ({image}x{image}x1 input squeezed to "
      f"{image // 2}x{image // 2}x4, hidden {hidden}, 5 series terms, batch 16). Blocks of a stage run "
      "under `nn.scan`, so the step is traced once whatever the depth.",
      "",
      "| blocks | compile (s) | ratio to the shallowest |",
      "|---:|---:|---:|",
      *rows,
      "",
  ])
  print(text)
  if not args.quick:
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "compile_time.md"), "w") as f:
      f.write(text)


if __name__ == "__main__":
  main()
