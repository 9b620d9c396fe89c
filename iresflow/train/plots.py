"""Figures written by training: sample grids, reconstructions, 2-D densities (matplotlib, PNG).

matplotlib is imported when a figure is drawn, with the non-interactive Agg backend for that figure
only (``matplotlib.figure.Figure``, no pyplot): importing this module changes nothing in the process.
"""

from __future__ import annotations

import math

import numpy as np


def _figure(**kwargs):
  from matplotlib.figure import Figure  # no pyplot: no global backend, no window

  return Figure(**kwargs)


def image_grid(images: np.ndarray, path: str, title: str = "", columns: int | None = None) -> None:
  """Saves images ``(N, H, W, C)`` with values in [0, 1] as one grid PNG.

  The images are tiled into one mosaic with white gaps and drawn once (one axes for the whole grid:
  a grid of 100 images draws in a fraction of the time of 100 axes).
  """
  images = np.clip(np.asarray(images, np.float32), 0, 1)
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"images: expected shape (N, H, W, 1 or 3), got {images.shape}")
  n, height, width, channels = images.shape
  columns = columns or int(math.ceil(math.sqrt(n)))
  rows = int(math.ceil(n / columns))
  gap = max(1, round(0.08 * max(height, width)))
  mosaic = np.ones((rows * (height + gap) - gap, columns * (width + gap) - gap, channels), np.float32)
  for i, image in enumerate(images):
    top, left = (i // columns) * (height + gap), (i % columns) * (width + gap)
    mosaic[top:top + height, left:left + width] = image
  fig = _figure(figsize=(columns * 0.9, rows * 0.9 + (0.4 if title else 0)))
  ax = fig.add_subplot()
  ax.axis("off")
  ax.imshow(mosaic[..., 0] if channels == 1 else mosaic, cmap="gray" if channels == 1 else None, vmin=0, vmax=1,
            interpolation="nearest")
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def density_figure(data: np.ndarray, samples: np.ndarray, grid: np.ndarray, log_density: np.ndarray,
                   extent: float, path: str, title: str = "") -> None:
  """Saves data, model density (heat map) and model samples side by side for a 2-D flow."""
  fig = _figure(figsize=(10, 3.5))
  axes = fig.subplots(1, 3)
  axes[0].hist2d(data[:, 0], data[:, 1], bins=100, range=[[-extent, extent]] * 2, cmap="viridis")
  axes[0].set_title("data")
  size = int(math.sqrt(len(grid)))
  axes[1].imshow(np.exp(log_density).reshape(size, size), origin="lower", extent=[-extent, extent] * 2,
                 cmap="viridis")
  axes[1].set_title("model density")
  axes[2].hist2d(samples[:, 0], samples[:, 1], bins=100, range=[[-extent, extent]] * 2, cmap="viridis")
  axes[2].set_title("model samples")
  for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal")
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
