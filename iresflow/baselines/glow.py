"""A Glow-style baseline (Kingma & Dhariwal 2018) for the paper's comparisons (Figure 2, Table 4).

Each step is ActNorm -> a learned invertible ``C x C`` channel mixing (Glow's 1x1 convolution;
initialised orthogonal, log-det by ``slogdet`` times the number of positions) -> an affine coupling
layer whose scale and shift come from a network of the first half of the channels (an MLP for
vectors, 3x3 -> 1x1 -> 3x3 convolutions with ReLU for images; log-scale through ``tanh``, as is
common, for stability). A standard normal prior. ``GlowFlow`` is for vectors; ``GlowImageFlow`` for
images, with the same squeeze-and-stages layout as the i-ResNet flow (no factor-out). The baseline
the experiments compare the i-ResNet against at equal parameters.
"""

from __future__ import annotations

import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from iresflow.nn import ActNorm, squeeze, unsqueeze


def parameter_count(params) -> int:
  """Number of scalars in a parameter tree (to match the models' budgets)."""
  return sum(p.size for p in jax.tree.leaves(params))


def matching_width(make_flow: Callable[[int], nn.Module], n_params: int, x: jax.Array, *, low: int = 4,
                   high: int = 1024) -> int:
  """The width ``h`` in ``[low, high]`` whose ``make_flow(h)`` has the parameter count closest to ``n_params``.

  Bisection on ``h`` (the count grows with the width), so about ``log2(high - low)`` shape-only
  initialisations (``jax.eval_shape``) instead of one per candidate width.

  Args:
    make_flow: ``width -> module``, e.g. ``lambda h: GlowImageFlow(stages, h)``.
    n_params: the parameter count to match.
    x: an input batch for ``init`` (only its shape and dtype are used).
  """
  def count(width: int) -> int:
    return parameter_count(jax.eval_shape(make_flow(width).init, jax.random.key(0), x)["params"])

  if count(low) >= n_params:
    return low
  while high - low > 1:  # count(low) < n_params, and the answer lies in [low, high]
    middle = (low + high) // 2
    low, high = (middle, high) if count(middle) < n_params else (low, middle)
  return min((low, high), key=lambda width: abs(count(width) - n_params))


class InvertibleMixing(nn.Module):
  """``y = x @ W`` over the last axis with a learned invertible ``W`` (orthogonal at init).

  The log-det per example is ``log|det W|`` times the number of positions (pixels) it mixes at.
  """

  @nn.compact
  def __call__(self, x: jax.Array, inverse: bool = False) -> tuple[jax.Array, jax.Array]:
    d = x.shape[-1]
    weight = self.param("weight", nn.initializers.orthogonal(), (d, d))
    log_det = jnp.linalg.slogdet(weight)[1] * math.prod(x.shape[1:-1])
    if inverse:
      return x @ jnp.linalg.inv(weight), -jnp.full((x.shape[0],), log_det)
    return x @ weight, jnp.full((x.shape[0],), log_det)


class AffineCoupling(nn.Module):
  """``y2 = x2 * exp(s(x1)) + t(x1)``, ``y1 = x1`` over the last axis.

  ``s, t`` come from two hidden layers: dense for vectors, 3x3 and 1x1 convolutions for images (then a
  3x3 output convolution), ReLU; the output layer starts at zero, so the coupling starts as the identity.
  """

  hidden: int

  @nn.compact
  def __call__(self, x: jax.Array, inverse: bool = False) -> tuple[jax.Array, jax.Array]:
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    image = x.ndim == 4
    layer = (lambda width, size, **kw: nn.Conv(width, (size, size), **kw)) if image else (
        lambda width, size, **kw: nn.Dense(width, **kw))
    h = nn.relu(layer(self.hidden, 3, name="hidden0")(x1))
    h = nn.relu(layer(self.hidden, 1, name="hidden1")(h))
    out = layer(2 * x2.shape[-1], 3, kernel_init=nn.initializers.zeros, name="out")(h)
    log_scale, shift = jnp.tanh(out[..., :x2.shape[-1]]), out[..., x2.shape[-1]:]
    log_det = jnp.sum(log_scale.reshape(x.shape[0], -1), -1)
    if inverse:
      return jnp.concatenate([x1, (x2 - shift) * jnp.exp(-log_scale)], -1), -log_det
    return jnp.concatenate([x1, x2 * jnp.exp(log_scale) + shift], -1), log_det


class GlowFlow(nn.Module):
  """``n_steps`` x (ActNorm, mixing, coupling) on vectors, standard normal prior."""

  n_steps: int
  hidden: int

  def setup(self):
    self.norms = [ActNorm() for _ in range(self.n_steps)]
    self.mixings = [InvertibleMixing() for _ in range(self.n_steps)]
    self.couplings = [AffineCoupling(self.hidden) for _ in range(self.n_steps)]

  def log_prob(self, x: jax.Array) -> jax.Array:
    total = jnp.zeros((x.shape[0],), x.dtype)
    for norm, mixing, coupling in zip(self.norms, self.mixings, self.couplings):
      x, log_det = norm.forward_and_log_det(x)
      total += log_det
      x, log_det = mixing(x)
      total += log_det
      x, log_det = coupling(x)
      total += log_det
    return total - 0.5 * jnp.sum(x**2, -1) - 0.5 * x.shape[-1] * math.log(2 * math.pi)

  def sample(self, z: jax.Array) -> jax.Array:
    for norm, mixing, coupling in reversed(list(zip(self.norms, self.mixings, self.couplings))):
      z, _ = coupling(z, inverse=True)
      z, _ = mixing(z, inverse=True)
      z = norm.inverse(z)
    return z

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.log_prob(x)


class GlowImageFlow(nn.Module):
  """Images ``(H, W, C)``: squeeze, then stages of Glow steps separated by squeezes; latents flat.

  Attributes:
    stages: steps per stage (the same layout as ``IResNetFlow(initial_squeeze=True,
      factor_out=False)``).
    hidden: channels of the coupling networks.
  """

  stages: tuple[int, ...]
  hidden: int

  def setup(self):
    n = sum(self.stages)
    self.norms = [ActNorm() for _ in range(n)]
    self.mixings = [InvertibleMixing() for _ in range(n)]
    self.couplings = [AffineCoupling(self.hidden) for _ in range(n)]

  def _stage_of_step(self) -> list[int]:
    return [i for i, length in enumerate(self.stages) for _ in range(length)]

  def log_prob(self, x: jax.Array) -> jax.Array:
    total = jnp.zeros((x.shape[0],), x.dtype)
    x = squeeze(x)
    stage = 0
    for index, (norm, mixing, coupling) in enumerate(zip(self.norms, self.mixings, self.couplings)):
      if self._stage_of_step()[index] != stage:
        x, stage = squeeze(x), stage + 1
      for layer in (norm.forward_and_log_det, mixing, coupling):
        x, log_det = layer(x)
        total += log_det
    z = x.reshape(x.shape[0], -1)
    return total - 0.5 * jnp.sum(z**2, -1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)

  def sample(self, z: jax.Array, data_shape: tuple[int, int, int]) -> jax.Array:
    h, w, c = data_shape
    factor = 2 ** len(self.stages)
    x = z.reshape(z.shape[0], h // factor, w // factor, c * factor**2)
    stage = len(self.stages) - 1
    steps = list(zip(self.norms, self.mixings, self.couplings))
    for index in reversed(range(len(steps))):
      if self._stage_of_step()[index] != stage:
        x, stage = unsqueeze(x), stage - 1
      norm, mixing, coupling = steps[index]
      x, _ = coupling(x, inverse=True)
      x, _ = mixing(x, inverse=True)
      x = norm.inverse(x)
    return unsqueeze(x)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.log_prob(x)
