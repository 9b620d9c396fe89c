"""2-D toy densities, generated in code (the usual benchmark set of FFJORD / Residual Flows figures).

Every sampler is ``f(n, rng) -> (n, 2) float32`` with a NumPy ``Generator``; the data are roughly
centred and scaled to ``[-4, 4]``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def eight_gaussians(n: int, rng: np.random.Generator) -> np.ndarray:
  """Eight Gaussians (std 0.5) on a circle of radius 4, scaled by 1/sqrt(2)."""
  angles = 2 * np.pi * rng.integers(0, 8, n) / 8
  centers = 4.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
  return (centers + 0.5 * rng.normal(size=(n, 2))) / np.sqrt(2)


def checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
  """Uniform on the black squares of a 4x4 checkerboard over [-4, 4]^2."""
  x1 = rng.uniform(-2, 2, n)
  x2 = rng.uniform(0, 1, n) - 2 * rng.integers(0, 2, n) + (np.floor(x1) % 2)
  return 2.0 * np.stack([x1, x2], axis=1)


def two_spirals(n: int, rng: np.random.Generator) -> np.ndarray:
  """Two interleaved spirals with Gaussian noise."""
  half = n // 2
  t = np.sqrt(rng.uniform(size=n - half)) * 3 * np.pi
  arm = np.stack([-np.cos(t) * t, np.sin(t) * t], axis=1) + 0.5 * rng.uniform(size=(n - half, 2))
  t2 = np.sqrt(rng.uniform(size=half)) * 3 * np.pi
  arm2 = -(np.stack([-np.cos(t2) * t2, np.sin(t2) * t2], axis=1) + 0.5 * rng.uniform(size=(half, 2)))
  return np.concatenate([arm, arm2]) / 3 + 0.1 * rng.normal(size=(n, 2))


def moons(n: int, rng: np.random.Generator) -> np.ndarray:
  """Two interleaving half circles with noise 0.1, scaled by 2."""
  upper = rng.uniform(size=n) < 0.5
  t = rng.uniform(0, np.pi, n)
  x = np.where(upper, np.cos(t), 1 - np.cos(t))
  y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
  return 2.0 * np.stack([x, y], axis=1) + np.array([-1.0, -0.2]) + 0.2 * rng.normal(size=(n, 2))


def pinwheel(n: int, rng: np.random.Generator) -> np.ndarray:
  """Five curved arms: Gaussians stretched radially, then rotated by an angle growing with radius."""
  arms, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
  labels = rng.integers(0, arms, n)
  features = rng.normal(size=(n, 2)) * np.array([radial_std, tangential_std]) + np.array([1.0, 0.0])
  angles = 2 * np.pi * labels / arms + rate * np.exp(features[:, 0])
  cos, sin = np.cos(angles), np.sin(angles)
  rotated = np.stack([cos * features[:, 0] - sin * features[:, 1], sin * features[:, 0] + cos * features[:, 1]], 1)
  return 2.0 * rotated


def rings(n: int, rng: np.random.Generator) -> np.ndarray:
  """Four concentric rings of radii 1..4 (scaled), with small noise."""
  radius = rng.integers(1, 5, n).astype(np.float64)
  t = rng.uniform(0, 2 * np.pi, n)
  points = np.stack([np.cos(t), np.sin(t)], axis=1) * radius[:, None] * 0.9
  return points + 0.08 * rng.normal(size=(n, 2))


def swissroll(n: int, rng: np.random.Generator) -> np.ndarray:
  """The 2-D Swiss roll: a spiral sheet seen from above, noise 1.0, scaled by 1/5."""
  t = 1.5 * np.pi * (1 + 2 * rng.uniform(size=n))
  points = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) + rng.normal(size=(n, 2))
  return points / 5.0


def circles(n: int, rng: np.random.Generator) -> np.ndarray:
  """Two concentric circles (radii 3 and 1.5) with noise 0.08 * 3."""
  outer = rng.uniform(size=n) < 0.5
  t = rng.uniform(0, 2 * np.pi, n)
  radius = np.where(outer, 1.0, 0.5)
  points = np.stack([np.cos(t), np.sin(t)], axis=1) * radius[:, None]
  return 3.0 * (points + 0.08 * rng.normal(size=(n, 2)))


TOY_DENSITIES: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "8gaussians": eight_gaussians, "checkerboard": checkerboard, "2spirals": two_spirals, "moons": moons,
    "pinwheel": pinwheel, "rings": rings, "swissroll": swissroll, "circles": circles,
}


def sample_toy(name: str, n: int, seed: int | np.random.Generator = 0) -> np.ndarray:
  """``n`` samples ``(n, 2)`` float32 from the named toy density.

  Raises:
    ValueError: for an unknown name (the message lists the known ones).
  """
  if name not in TOY_DENSITIES:
    raise ValueError(f"dataset: unknown toy density {name!r}; expected one of {sorted(TOY_DENSITIES)}")
  rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
  return TOY_DENSITIES[name](int(n), rng).astype(np.float32)
