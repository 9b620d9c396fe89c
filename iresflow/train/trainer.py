"""``train_and_evaluate(config, workdir)``: the training job for density models, classifiers and hybrids.

Data parallel over every device and host (``jax.jit`` + ``NamedSharding`` on a ``('data',)`` mesh;
see :mod:`iresflow.train.setup`), with Orbax checkpoints every ``checkpoint_every`` steps and at the
end, a progress bar, metrics as JSON lines (``workdir/metrics.jsonl``), and at the end an evaluation
written to ``workdir/results.json``: the test metric with the estimator stated, the reconstruction
error of the inverse, the Lipschitz certificate, and figures (PNG). Evaluation is sharded like
training; only process 0 writes files.

Restarting with the same ``workdir`` continues from the last checkpoint with the same data order and
the same random numbers, so the run ends as an uninterrupted one would. A non-finite loss or
gradient stops the run (:class:`TrainingDivergedError`) and leaves the last good checkpoint: the
host reads the device's record of the first bad step every ``finite_check_every`` steps and before
every log line and checkpoint, and no step after a bad one changes the state.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from iresflow.data.transforms import inverse_logit_transform
from iresflow.train import evaluation, plots, sharding
from iresflow.train.builders import make_solver
from iresflow.train.config import ConfigError
from iresflow.train.checkpoint import Checkpointer
from iresflow.train.setup import Training, check_config, setup_training
from iresflow.train.steps import Divergence, make_eval_step
from iresflow.train.workdir import CHECKPOINTS, evaluation_variables, json_ready, write_model_spec


class TrainingDivergedError(RuntimeError):
  """The loss or the gradients became NaN/inf; the last good checkpoint is kept."""


def _is_writer() -> bool:
  """Only process 0 writes files (the workdir is shared storage in a multi-host run)."""
  return jax.process_index() == 0


def _check_workdir(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    if _is_writer():
      probe = os.path.join(workdir, ".write_test")
      with open(probe, "w") as f:
        f.write("ok")
      os.remove(probe)
  except OSError as error:
    raise ConfigError(f"workdir: {workdir!r} is not a writable directory ({error})") from error


class _MetricsWriter:
  """Appends JSON lines (process 0 only); on resume, drops lines from steps after the restored checkpoint."""

  def __init__(self, path: str, resume_step: int):
    self.path = path
    if _is_writer() and os.path.exists(path):
      with open(path) as f:
        kept = [line for line in f if json.loads(line).get("step", 0) <= resume_step]
      with open(path, "w") as f:
        f.writelines(kept)

  def write(self, record: dict) -> None:
    if _is_writer():
      with open(self.path, "a") as f:
        f.write(json.dumps(record) + "\n")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains, checkpoints and evaluates; returns the evaluation results (also in results.json)."""
  check_config(config)
  _check_workdir(workdir)
  training = setup_training(config)
  if _is_writer():
    write_model_spec(workdir, config, training.data.data_shape, training.data.num_classes)
  state = _train(training, workdir)
  results = evaluate(training, state, workdir)
  results["step"] = int(state.step)
  _MetricsWriter(os.path.join(workdir, "metrics.jsonl"), int(state.step)).write(
      {"step": int(state.step), "split": "test", **{k: v for k, v in results.items() if isinstance(v, (int, float))}})
  if _is_writer():
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(json_ready(results), f, indent=2, allow_nan=False)
  return results


def _train(training: Training, workdir: str):
  """The training loop: steps, progress, metrics, finiteness checks, checkpoints."""
  config, state = training.config, training.state
  checkpointer = Checkpointer(os.path.join(workdir, CHECKPOINTS))
  start = 0
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore(state)
    start = int(state.step)
    print(f"Resumed from the checkpoint at step {start} in {checkpointer.directory}", file=sys.stderr)
  metrics_writer = _MetricsWriter(os.path.join(workdir, "metrics.jsonl"), start)
  divergence = jax.device_put(Divergence.none(), sharding.replicated(training.mesh))

  def stop_if_diverged() -> None:
    first_bad = int(divergence.step)  # waits for the device
    if first_bad >= 0:
      last = checkpointer.latest_step()
      checkpointer.close()
      raise TrainingDivergedError(
          f"step {first_bad}: the loss or the gradients are not finite (loss={float(divergence.loss)}); training "
          f"stopped. The last good checkpoint is step {last} in {checkpointer.directory}; lower the "
          f"learning rate or raise gradient clipping and restart from it.")

  progress = tqdm(range(start, config.num_steps), initial=start, total=config.num_steps, desc="train",
                  disable=not _progress_bars(config), dynamic_ncols=True, mininterval=1.0)
  tick, tick_step = time.time(), start
  for step in progress:
    state, divergence, metrics = training.train_step(state, divergence, training.device_batch(step))
    done = step + 1
    log = config.log_every and (done % config.log_every == 0 or done == config.num_steps)
    save = config.checkpoint_every and done % config.checkpoint_every == 0 and done < config.num_steps
    if log or save or done % config.finite_check_every == 0 or done == config.num_steps:
      stop_if_diverged()
    if log:
      record = json_ready(jax.device_get(metrics))
      record.pop("finite")
      record["steps_per_second"] = (done - tick_step) / max(time.time() - tick, 1e-9)
      tick, tick_step = time.time(), done
      metrics_writer.write({"step": done, "split": "train", **record})
      progress.set_postfix({**training.task.progress(record), "steps/s": f"{record['steps_per_second']:.2f}"})
    if save:
      checkpointer.save(done, state)
  progress.close()
  if checkpointer.latest_step() != config.num_steps:
    checkpointer.save(config.num_steps, state)
  checkpointer.close()
  return state


def _progress_bars(config) -> bool:
  """Whether this process shows progress (``config.progress``, first process only)."""
  return bool(config.progress) and _is_writer()


def evaluate(training: Training, state, workdir: str) -> dict:
  """Test metrics, certificate, and for flows the inverse's report and figures, from ``state``."""
  results, variables, certificate = metrics_on_test_set(training, state)
  if certificate is not None and _is_writer():
    with open(os.path.join(workdir, "certificate.json"), "w") as f:
      json.dump(certificate.to_dict(), f, indent=2)
  if training.task.name in ("density", "hybrid"):
    results.update(_evaluate_flow(training, variables, workdir, results))
  return results


def metrics_on_test_set(training: Training, state) -> tuple[dict, dict, Any]:
  """The test metric of ``state`` on the whole test split and its certificate; no files, no figures.

  The evaluated variables are those ``evaluate`` uses: the EMA parameters when ``config.ema_decay > 0``,
  with ``config.eval_refresh_iterations`` extra steps of the norm estimator.

  Returns:
    ``(results, variables, certificate)``: the task's summary (``test_bits_per_dim`` or ``test_nll``
    with its standard error over examples, or ``test_accuracy``; the estimator stated) plus
    ``certified`` and ``max_lipschitz_bound``; the evaluated variables; the
    :class:`iresflow.Certificate`, or None for a model without spectral state (the ResNet twin).
  """
  import iresflow

  config, model, task, data = training.config, training.model, training.task, training.data
  params = state.ema_params if config.ema_decay > 0 else state.params
  variables = evaluation_variables(model, params, state.spectral, config.eval_refresh_iterations)
  results: dict[str, Any] = {}
  bounds: list[float] = []
  certificate = None
  show = _progress_bars(config)
  if "spectral" in variables:
    if show:
      print("certifying every block (exact or Lanczos bounds of each layer's norm)...", file=sys.stderr, flush=True)
    certificate = iresflow.certify(model, variables)
    bounds = [block.lipschitz_bound for block in certificate.blocks]
    results.update(certified=certificate.certified, max_lipschitz_bound=certificate.max_lipschitz_bound)
  eval_step = make_eval_step(task, training.keys["eval"])
  per_example = evaluation.map_batches(eval_step, variables, (data.test,), config.eval_batch_size, training.mesh,
                                       desc=f"evaluate {len(data.test):,} test examples" if show else None)
  results.update(task.summarize(per_example, data.test_labels, bounds))
  return results, variables, certificate


def _evaluate_flow(training: Training, variables: dict, workdir: str, results: dict) -> dict:
  """The inverse on test data and on samples, and the figures."""
  config, model, task, data, mesh = training.config, training.model, training.task, training.data, training.mesh
  solver = make_solver(config.solver)
  x_test = np.asarray(task.model_input(training.keys["eval"], data.test[:config.eval_batch_size]))
  show = _progress_bars(config)
  report, x_back = evaluation.reconstruction_report(model, variables, x_test, solver, mesh, config.eval_batch_size,
                                                    desc="invert F(test examples)" if show else None)
  sampled, samples = evaluation.sample_report(model, variables, config.num_samples, training.keys["sample"], solver,
                                              mesh, config.eval_batch_size,
                                              desc=f"sample {config.num_samples}" if show else None)
  report.update(sampled)
  metric = f"test_{task.preprocessing.metric}"
  if data.num_levels is None:  # 2-D data: density, data and samples side by side
    extent = 4.5
    grid, log_density = evaluation.log_density_grid(model, variables, extent, 120, mesh, config.eval_batch_size,
                                                    desc="density on a grid" if show else None)
    _, many = evaluation.sample_report(model, variables, 5000, training.keys["sample"], solver, mesh,
                                       config.eval_batch_size, desc="sample 5,000 for the figure" if show else None)
    if _is_writer():
      plots.density_figure(data.test, many, grid, log_density, extent, os.path.join(workdir, "density.png"),
                           f"{config.dataset}: test NLL {results[metric]:.3f} nats")
  elif _is_writer():
    alpha = config.get("logit_alpha")
    to_image = (lambda x: np.asarray(inverse_logit_transform(x, alpha))) if alpha is not None else (lambda x: x + 0.5)
    plots.image_grid(to_image(samples), os.path.join(workdir, "samples.png"),
                     f"{config.dataset}: samples, test {results[metric]:.3f} bits/dim")
    plots.image_grid(np.concatenate([to_image(x_test[:16]), to_image(x_back[:16])]),
                     os.path.join(workdir, "reconstructions.png"), "top: data, bottom: F^-1(F(data))", columns=16)
  return report
