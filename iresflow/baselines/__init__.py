"""Baselines the experiments and benchmarks compare i-ResNets against (Flax modules, not i-ResNets).

* :class:`GlowFlow`, :class:`GlowImageFlow` -- Glow-style flows (ActNorm, invertible channel mixing,
  affine coupling; Kingma & Dhariwal 2018) for vectors and images, with exact log-determinants.
* :func:`matching_width` -- the coupling width that gives a baseline the same parameter count.
"""

from iresflow.baselines.glow import GlowFlow, GlowImageFlow, InvertibleMixing, matching_width, parameter_count

__all__ = ["GlowFlow", "GlowImageFlow", "InvertibleMixing", "matching_width", "parameter_count"]
