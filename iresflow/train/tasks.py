"""One object per training task: how its data reach the model, its loss, and its evaluation metrics.

* :class:`DensityTask` -- maximum likelihood of an ``IResNetFlow`` on dequantised images (bits/dim)
  or continuous data (nats).
* :class:`HybridTask` -- the same flow with a linear classifier on its latent: bits/dim +
  ``hybrid_weight`` * cross-entropy (Nalisnick et al. 2019; Residual Flows Sec. 5).
* :class:`ClassificationTask` -- cross-entropy of an ``IResNetClassifier`` (Sec. 5.1).

A task knows nothing about devices, checkpoints or files: its methods are pure functions of arrays
(``loss`` and ``evaluate_batch`` run under ``jax.jit``), plus the host-side ``batch`` that picks (and
for classification augments) the examples of a step. ``iresflow.train.steps`` builds the train step
from ``loss``; ``iresflow.train.trainer`` runs it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from iresflow.core.estimators import LogDetEstimator
from iresflow.data.pipeline import augment_crop_flip
from iresflow.data.transforms import bits_per_dim, dequantize, logit_transform

Batch = tuple[jax.Array, ...]


@dataclasses.dataclass(frozen=True)
class DensityPreprocessing:
  """How data reach the flow, and how log-likelihoods become bits/dim.

  Attributes:
    num_levels: discrete levels of the data (None: continuous data, e.g. 2-D toys; loss in nats).
    logit_alpha: logit transform parameter, or None for ``x - 0.5`` (a shift, log-det 0).
  """

  num_levels: int | None = 256
  logit_alpha: float | None = None

  def __call__(self, key: jax.Array, batch: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(x, log-det of the preprocessing)`` for a batch of integers (or continuous data)."""
    if self.num_levels is None:
      return batch.astype(jnp.float32), jnp.zeros((batch.shape[0],), jnp.float32)
    x = dequantize(key, batch, self.num_levels)
    if self.logit_alpha is None:
      return x - 0.5, jnp.zeros((batch.shape[0],), jnp.float32)
    return logit_transform(x, self.logit_alpha)

  def loss_per_example(self, log_prob: jax.Array, dim: int) -> jax.Array:
    """Bits/dim for discrete data, negative log-likelihood (nats) for continuous data."""
    if self.num_levels is None:
      return -log_prob
    return bits_per_dim(log_prob, dim, self.num_levels)

  @property
  def metric(self) -> str:
    return "bits_per_dim" if self.num_levels else "nll"


@dataclasses.dataclass(frozen=True)
class DensityTask:
  """Density estimation with an ``IResNetFlow``.

  Attributes:
    model: the flow.
    preprocessing: dequantisation / logit transform and the bits/dim conversion.
    estimator: the log-det estimator of the training loss.
    eval_estimator: the one of the test metric.
  """

  model: nn.Module
  preprocessing: DensityPreprocessing
  estimator: LogDetEstimator
  eval_estimator: LogDetEstimator
  name = "density"

  @property
  def dim(self) -> int:
    return math.prod(self.model.data_shape)

  def model_input(self, key: jax.Array, images: jax.Array) -> jax.Array:
    return self.preprocessing(key, jnp.asarray(images))[0]

  def init_variables(self, key: jax.Array, batch: Batch) -> dict:
    return self.model.init(key, self.model_input(key, batch[0]), estimator=self.estimator)

  def batch(self, data: Any, indices: np.ndarray, step: int) -> tuple[np.ndarray, ...]:
    del step
    return (data.train[indices],)

  def _log_prob(self, variables, x, estimator, key, mutable):
    return self.model.apply(variables, x, estimator=estimator, rngs={"logdet": key}, mutable=mutable)

  def loss(self, params, spectral, batch: Batch, key: jax.Array):
    """``(mean loss, (new spectral state, metrics))`` for one batch; differentiable in ``params``."""
    data_key, logdet_key = jax.random.split(key)
    x, pre_logdet = self.preprocessing(data_key, batch[0])
    log_prob, state = self._log_prob({"params": params, "spectral": spectral}, x, self.estimator, logdet_key,
                                     ["spectral"])
    loss = jnp.mean(self.preprocessing.loss_per_example(log_prob + pre_logdet, self.dim))
    return loss, (state["spectral"], {})

  def evaluate_batch(self, variables: dict, batch: Batch, key: jax.Array) -> dict[str, jax.Array]:
    """Per-example test metrics of one batch."""
    data_key, logdet_key = jax.random.split(key)
    x, pre_logdet = self.preprocessing(data_key, batch[0])
    log_prob = self.model.apply(variables, x, estimator=self.eval_estimator, rngs={"logdet": logdet_key})
    return {"loss": self.preprocessing.loss_per_example(log_prob + pre_logdet, self.dim)}

  def summarize(self, per_example: dict[str, np.ndarray], labels: np.ndarray | None,
                lipschitz_bounds: list[float]) -> dict:
    """The test results: the metric (mean over examples) with its standard error, the estimator that computed
    it, and its bias bound if it has one."""
    del labels
    loss = np.asarray(per_example["loss"], np.float64)
    metric = f"test_{self.preprocessing.metric}"
    results = {metric: float(loss.mean()),
               f"{metric}_standard_error": float(loss.std(ddof=1) / math.sqrt(len(loss))) if len(loss) > 1 else None,
               "estimator": self.eval_estimator.describe()}
    # The estimator's own bound from each block's certified Lip(g), each block's dimension at most D.
    transform = "cayley" if getattr(self.model, "block_type", "iresnet") == "monotone" else "residual"
    bias = self.eval_estimator.bias_bound(lipschitz_bounds, self.dim, transform=transform)
    if bias is None:
      results["estimator"] += ": its bias is not bounded"
    elif bias > 0:
      scale = 1.0 / (self.dim * math.log(2.0)) if self.preprocessing.num_levels else 1.0
      unit = "bits/dim" if self.preprocessing.num_levels else "nats"
      results["truncation_bias_bound"] = bias * scale
      results["estimator"] += f": truncation bias <= {bias * scale:.4g} {unit} (Theorem 3)"
    return results

  def progress(self, record: dict) -> dict:
    return {"loss": f"{record['loss']:.4f} {'bits/dim' if self.preprocessing.num_levels else 'nats'}"}


@dataclasses.dataclass(frozen=True)
class HybridTask(DensityTask):
  """A hybrid flow (``num_classes > 0``): loss = bits/dim + ``hybrid_weight`` * cross-entropy."""

  hybrid_weight: float = 1.0
  name = "hybrid"

  def batch(self, data: Any, indices: np.ndarray, step: int) -> tuple[np.ndarray, ...]:
    del step
    return data.train[indices], data.train_labels[indices]

  def loss(self, params, spectral, batch: Batch, key: jax.Array):
    images, labels = batch
    data_key, logdet_key = jax.random.split(key)
    x, pre_logdet = self.preprocessing(data_key, images)
    (log_prob, logits), state = self.model.apply(
        {"params": params, "spectral": spectral}, x, estimator=self.estimator, rngs={"logdet": logdet_key},
        mutable=["spectral"], method=self.model.log_prob_and_logits)
    density_loss = jnp.mean(self.preprocessing.loss_per_example(log_prob + pre_logdet, self.dim))
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    metrics = {self.preprocessing.metric: density_loss, "cross_entropy": cross_entropy,
               "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}
    return density_loss + self.hybrid_weight * cross_entropy, (state["spectral"], metrics)

  def evaluate_batch(self, variables: dict, batch: Batch, key: jax.Array) -> dict[str, jax.Array]:
    data_key, logdet_key = jax.random.split(key)
    x, pre_logdet = self.preprocessing(data_key, batch[0])
    log_prob, logits = self.model.apply(variables, x, estimator=self.eval_estimator, rngs={"logdet": logdet_key},
                                        method=self.model.log_prob_and_logits)
    return {"loss": self.preprocessing.loss_per_example(log_prob + pre_logdet, self.dim),
            "prediction": jnp.argmax(logits, -1)}

  def summarize(self, per_example, labels, lipschitz_bounds) -> dict:
    results = super().summarize(per_example, labels, lipschitz_bounds)
    results["test_accuracy"] = float(np.mean(per_example["prediction"] == labels))
    return results

  def progress(self, record: dict) -> dict:
    return {"loss": f"{record['loss']:.4f}", "bits/dim": f"{record['bits_per_dim']:.4f}",
            "acc": f"{record['accuracy']:.3f}"}


@dataclasses.dataclass(frozen=True)
class ClassificationTask:
  """Cross-entropy of an ``IResNetClassifier`` on images scaled to ``[-0.5, 0.5]``.

  Attributes:
    model: the classifier.
    num_levels: levels of the integer images.
    augment_padding: random-crop padding (pixels) for training batches.
    augment_flip: random horizontal flips for training batches.
    seed: seed of the augmentation (its draws are a function of ``(seed, step)``).
  """

  model: nn.Module
  num_levels: int
  augment_padding: int = 0
  augment_flip: bool = False
  seed: int = 0
  name = "classification"

  def model_input(self, key: jax.Array, images: jax.Array) -> jax.Array:
    del key
    return jnp.asarray(images, jnp.float32) / (self.num_levels - 1) - 0.5

  def init_variables(self, key: jax.Array, batch: Batch) -> dict:
    return self.model.init(key, self.model_input(key, batch[0]))

  def batch(self, data: Any, indices: np.ndarray, step: int) -> tuple[np.ndarray, ...]:
    images = data.train[indices]
    if self.augment_padding or self.augment_flip:
      rng = np.random.default_rng([self.seed, 7, step])
      images = augment_crop_flip(images, rng, self.augment_padding, self.augment_flip)
    return images, data.train_labels[indices]

  def loss(self, params, spectral, batch: Batch, key: jax.Array):
    images, labels = batch
    x = self.model_input(key, images)
    variables = {"params": params}
    if spectral:
      variables["spectral"] = spectral
      logits, state = self.model.apply(variables, x, mutable=["spectral"])
      spectral = state["spectral"]
    else:
      logits = self.model.apply(variables, x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, (spectral, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)})

  def evaluate_batch(self, variables: dict, batch: Batch, key: jax.Array) -> dict[str, jax.Array]:
    return {"prediction": jnp.argmax(self.model.apply(variables, self.model_input(key, batch[0])), -1)}

  def summarize(self, per_example, labels, lipschitz_bounds) -> dict:
    del lipschitz_bounds
    accuracy = float(np.mean(per_example["prediction"] == labels))
    return {"test_accuracy": accuracy, "test_error": 1.0 - accuracy}

  def progress(self, record: dict) -> dict:
    return {"loss": f"{record['loss']:.4f}", "acc": f"{record['accuracy']:.4f}"}
