"""Training-step memory on an H200, read off programs compiled for one on a machine without a GPU.

XLA can compile for a GPU that is not there (a "deviceless" compile): ``jax.experimental.topologies``
describes the device from a target configuration (SM count, compute capability, memory; below), and
the compiled program's memory analysis gives its buffers as on the real device. This script compiles
the training steps whose GPU memory issue #15 asks about and reports XLA's temporary buffers (what a
step needs beyond its inputs and outputs):

* ``image``: ``vs_normflows.py``'s image workload (4x14x14, 8 blocks, 64 hidden channels, batch 64),
  the cells of its GPU memory measurement (Neumann gradient 2 and 20 terms, backprop 2 and 20 terms;
  PowerSeries' default remat) plus the Neumann step without remat; blocks under ``nn.scan``, the GPU
  default;
* ``paper``: the paper-size MNIST and CIFAR-10 training steps of ``full_size_step.py`` (the configs'
  models, optimizer, EMA, batch 64): the configs' backprop through the series under the default and
  the bfloat16 precision policies, and the Neumann gradient.

What a deviceless compile cannot know: the cuDNN convolution algorithms that autotuning on the device
picks, and their workspaces. Without the device XLA takes algorithms that need no workspace (the
``max_convolution_scratch_bytes`` column shows it), so the numbers are the step's buffers without
cuDNN's workspace. ``--measured`` puts a GPU run's measured peaks (``gpu_cells.py memory``: growth of
the allocator's peak during a step) next to the compiled numbers of the same program, which is how
docs/gpu_compiled_memory.md calibrates the method against run 3 (compiled from that run's commit).

The CUDA plugin must be installed (it is not one of the project's dependencies; ~4 GB) and JAX kept on
the CPU for everything else, since the plugin cannot initialise without a GPU:

    python -m venv /tmp/gpu-venv && /tmp/gpu-venv/bin/pip install "jax[cuda13]==0.10.2"
    /tmp/gpu-venv/bin/pip install -c constraints.txt -e .
    JAX_PLATFORMS=cpu /tmp/gpu-venv/bin/python benchmarks/gpu_compiled_memory.py   # docs/gpu_compiled_memory.json
    python benchmarks/gpu_compiled_memory.py --quick --target cpu    # tiny, this CPU as the target (a test runs it)
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys

import jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB = 2**20

# The H200 as XLA's GPU compiler sees it: NVIDIA's H200 data (Hopper, compute capability 9.0, 132 SMs,
# 4.8 TB/s HBM3e, 50 MiB L2) and the memory nvidia-smi reported on the lent machine (143,771 MiB).
# The per-SM limits are Hopper's (CUDA C Programming Guide, compute capability 9.0).
H200_TARGET_CONFIG = """
gpu_device_info {
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: 233472
  threads_per_core_limit: 2048
  core_count: 132
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: 4800000000000
  l2_cache_size: 52428800
  clock_rate_ghz: 1.98
  device_memory_size: 150754820096
  shared_memory_per_block_optin: 232448
  cuda_compute_capability { major: 9 minor: 0 }
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}
runtime_version { major: 13 minor: 0 patch: 0 }
dnn_version_info { major: 9 minor: 10 }
platform_name: "CUDA"
device_description_str: "NVIDIA H200"
"""

IMAGE_CELLS = [("neumann", 2, None), ("neumann", 20, None), ("neumann", 2, False), ("backprop", 2, None),
               ("backprop", 20, None)]
PAPER_CELLS = [(config, policy, gradient) for config in ("mnist_flow", "cifar10_flow")
               for policy, gradient in (("default", "backprop"), ("default", "neumann"), ("bfloat16", "backprop"))]


def target_device(target: str) -> jax.Device:
  """The device to compile for: ``'h200'`` (deviceless, needs the CUDA plugin) or ``'cpu'`` (this host)."""
  if target == "cpu":
    return jax.devices("cpu")[0]
  from jax.experimental import topologies
  try:
    topology = topologies.get_topology_desc("h200", "cuda", target_config=H200_TARGET_CONFIG, topology="1x1x1")
  except NotImplementedError as error:
    raise SystemExit("target h200: the CUDA plugin is not loaded; install jax[cuda13] and run with "
                     "JAX_PLATFORMS=cpu (see the module docstring)") from error
  return topology.devices[0]


def convolution_workspaces(hlo_text: str) -> list[int]:
  """Workspace bytes of each cuDNN convolution in a compiled GPU program's text.

  A cuDNN convolution is a custom call that returns ``(result, u8[workspace bytes])``; the workspace
  is one of the program's temporary buffers.
  """
  pattern = r"= \([^()]*, u8\[(\d+)\]\{0\}\) custom-call\([^\n]*custom_call_target=\"__cudnn\$conv"
  return [int(size) for size in re.findall(pattern, hlo_text)]


def compiled_memory(jitted, args: tuple, device: jax.Device) -> dict:
  """XLA's memory analysis of ``jitted`` compiled for ``device``, on abstract copies of ``args``."""
  sharding = jax.sharding.SingleDeviceSharding(device)
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), args)
  compiled = jitted.lower(*abstract).compile()
  analysis = compiled.memory_analysis()
  workspaces = convolution_workspaces(compiled.as_text())
  return {"temp_bytes": int(analysis.temp_size_in_bytes), "argument_bytes": int(analysis.argument_size_in_bytes),
          "output_bytes": int(analysis.output_size_in_bytes), "alias_bytes": int(analysis.alias_size_in_bytes),
          "convolution_calls": len(workspaces), "max_convolution_scratch_bytes": max(workspaces, default=0)}


def image_cells(bench, device: jax.Device, quick: bool) -> dict:
  """The image workload's train steps of ``bench`` (a ``vs_normflows`` module), scanned blocks.

  ``quick``: the workload's tiny version, and only three of the cells.
  """
  workload = bench.workloads(quick)[1]
  takes_remat = "remat" in inspect.signature(bench.IresflowSide).parameters
  results = {}
  for gradient, n_terms, remat in IMAGE_CELLS[::2] if quick else IMAGE_CELLS:
    if remat is not None and not takes_remat:
      continue  # an older checkout, before PowerSeries' remat
    options = {"remat": remat} if takes_remat else {}
    side = bench.IresflowSide(workload, gradient, n_terms, unroll=False, **options)
    name = f"{gradient}/{n_terms}" + ("" if remat is None else f"/remat={remat}")
    results[name] = compiled_memory(side.train_step, (side.params, side.spectral, side.opt_state, side.x,
                                                      side.key), device)
    print(f"image {name}: {results[name]['temp_bytes'] / MiB:.1f} MiB", flush=True)
  return results


def paper_cells(full_size_step, device: jax.Device, quick: bool) -> dict:
  """The paper-size configs' train steps (``quick``: digits_flow, one block per stage), scanned blocks."""
  cells = [("digits_flow", "default", "backprop")] if quick else PAPER_CELLS
  results = {}
  for config_name, policy, gradient in cells:
    step, state, batches, config = full_size_step.build_step(config_name, False, 1 if quick else None, policy,
                                                             gradient)
    name = f"{config_name}/{policy}/{gradient}"
    results[name] = {**compiled_memory(jax.jit(step, donate_argnums=0), (state, batches[0]), device),
                     "batch": config.batch_size, "blocks": list(config.model.stages)}
    print(f"paper {name}: {results[name]['temp_bytes'] / MiB:.1f} MiB at batch {config.batch_size}", flush=True)
  return results


def load_script(directory: str, name: str):
  """The module ``directory/name.py`` (a benchmark script of this or another checkout), imported by path."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(directory, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


def git_commit(directory: str) -> str:
  out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=directory)
  return out.stdout.strip() or "unknown"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--target", choices=["h200", "cpu"], default="h200")
  parser.add_argument("--cells", nargs="+", choices=["image", "paper"], default=["image", "paper"])
  parser.add_argument("--bench-dir", default=os.path.join(ROOT, "benchmarks"),
                      help="where vs_normflows.py and full_size_step.py are imported from (another checkout's "
                           "benchmarks/ compiles that checkout's programs, with its iresflow on PYTHONPATH)")
  parser.add_argument("--measured", default=None,
                      help="a gpu_cells.py memory.json whose measured peaks go next to the image cells")
  parser.add_argument("--quick", action="store_true", help="tiny sizes; prints only unless --output")
  parser.add_argument("--output", default=None, help="JSON file (default docs/gpu_compiled_memory.json)")
  args = parser.parse_args()
  device = target_device(args.target)
  results = {"target": device.device_kind, "platform": device.platform, "jax": jax.__version__,
             "commit": git_commit(os.path.abspath(args.bench_dir)), "quick": args.quick}
  if "image" in args.cells:
    results["image"] = image_cells(load_script(args.bench_dir, "vs_normflows"), device, args.quick)
  if "paper" in args.cells:
    results["paper"] = paper_cells(load_script(args.bench_dir, "full_size_step"), device, args.quick)
  if args.measured:
    with open(args.measured) as f:
      measured = json.load(f)["memory"]
    results["measured"] = {name.removeprefix("iresflow/"): value for name, value in measured.items()
                           if name.startswith("iresflow/")}
    source = os.path.relpath(os.path.abspath(args.measured), ROOT)
    results["measured_by"] = f"growth of the allocator's peak during one step, {source}"
    for name, value in results["measured"].items():
      if name in results.get("image", {}):
        compiled = results["image"][name]["temp_bytes"]
        print(f"image {name}: measured {value / MiB:.1f} MiB, compiled {compiled / MiB:.1f} MiB, "
              f"difference {(value - compiled) / MiB:.1f} MiB", flush=True)
  output = args.output or (None if args.quick else os.path.join(ROOT, "docs", "gpu_compiled_memory.json"))
  if output:
    with open(output, "w") as f:
      json.dump(results, f, indent=1, allow_nan=False)


if __name__ == "__main__":
  main()
