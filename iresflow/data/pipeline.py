"""Deterministic, resumable batching of in-memory arrays, and augmentation for classification.

The order of examples is a function of ``(seed, epoch)`` only, and the batch of a step a function of
``(seed, step)``: a run restarted at step ``s`` sees exactly the batches an uninterrupted run would
have seen from ``s`` on. With several processes each one takes its contiguous slice of the global
batch (``process_index``), which ``jax.make_array_from_process_local_data`` assembles.
"""

from __future__ import annotations

import numpy as np


class BatchSampler:
  """Global batches of indices into a dataset of ``num_examples``, epoch by epoch, dropping the remainder.

  Args:
    num_examples: dataset size.
    batch_size: global batch size (over all processes).
    seed: shuffling seed.
    process_index, process_count: this process's slice of each global batch.
  """

  def __init__(self, num_examples: int, batch_size: int, seed: int, process_index: int = 0,
               process_count: int = 1):
    if batch_size < 1 or batch_size > num_examples:
      raise ValueError(f"batch_size: expected 1..{num_examples} (the dataset size), got {batch_size}")
    if batch_size % process_count:
      raise ValueError(f"batch_size: {batch_size} is not divisible by the {process_count} processes")
    self.num_examples, self.batch_size, self.seed = num_examples, batch_size, seed
    self.process_index, self.process_count = process_index, process_count
    self.steps_per_epoch = num_examples // batch_size
    self._epoch, self._order = -1, None

  def global_indices(self, step: int) -> np.ndarray:
    """Indices of the global batch of ``step`` (0-based)."""
    epoch, offset = divmod(step, self.steps_per_epoch)
    if epoch != self._epoch:
      self._epoch = epoch
      self._order = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
    return self._order[offset * self.batch_size:(offset + 1) * self.batch_size]

  def local_indices(self, step: int) -> np.ndarray:
    """This process's contiguous part of the global batch of ``step``."""
    per_process = self.batch_size // self.process_count
    start = self.process_index * per_process
    return self.global_indices(step)[start:start + per_process]


def augment_crop_flip(images: np.ndarray, rng: np.random.Generator, padding: int, flip: bool) -> np.ndarray:
  """Random crop after zero padding by ``padding`` pixels, and random horizontal flip (NHWC)."""
  n, h, w, _ = images.shape
  if padding:
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    dy = rng.integers(0, 2 * padding + 1, n)
    dx = rng.integers(0, 2 * padding + 1, n)
    images = np.stack([padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
  if flip:
    flips = rng.uniform(size=n) < 0.5
    images = np.where(flips[:, None, None, None], images[:, :, ::-1], images)
  return images
