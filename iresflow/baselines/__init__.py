"""Baselines the experiments and benchmarks compare i-ResNets against (Flax modules, not i-ResNets).

* :class:`GlowFlow`, :class:`GlowImageFlow` -- Glow-style flows (ActNorm, invertible channel mixing,
  affine coupling; Kingma & Dhariwal 2018) for vectors and images, with exact log-determinants.
"""

from iresflow.baselines.glow import GlowFlow, GlowImageFlow, InvertibleMixing, parameter_count

__all__ = ["GlowFlow", "GlowImageFlow", "InvertibleMixing", "parameter_count"]
