"""Flax linen modules: contractive layers, activations, ActNorm, reshapes, the blocks and the flow step.

Blocks: ``IResNetBlock`` (``x + g(x)``, i-ResNets and Residual Flows) and ``MonotoneBlock`` (the
Cayley transform of ``g``, Monotone Flows); ``g`` is a chain or, for i-DenseNets, a Lipschitz
DenseNet (``ResidualSpec(architecture='densenet', activation='clipswish')``).

Every invertible piece (``ActNorm``, ``Squeeze``, ``IResNetBlock``, ``MonotoneBlock``, ``FlowStep``, and the
flows) is an :class:`Invertible`: ``forward_and_log_det``, ``inverse`` and ``inverse_and_log_det``, each
taking the keyword settings it uses (``estimator=``, ``solver=``, ``context=``; see
:mod:`iresflow.nn.invertible`). The estimators and the solver come from :mod:`iresflow.core` and are
re-exported here.
"""

from iresflow.core.estimators import ExactLogDet, PowerSeries, Roulette
from iresflow.core.fixed_point import FixedPointInfo, FixedPointSolver
from iresflow.nn.actnorm import ActNorm
from iresflow.nn.activations import (ACTIVATIONS, Activation, clipswish, cpila, get_activation, lipswish, pila,
                                     register_activation)
from iresflow.nn.block import INVERSE_INFO, ContractiveBlock, IResNetBlock, inverse_info
from iresflow.nn.invertible import Invertible
from iresflow.nn.monotone import MonotoneBlock
from iresflow.nn.reshape import Squeeze, injective_pad, squeeze, unsqueeze
from iresflow.nn.residual import ContractiveResidual, ResidualSpec
from iresflow.nn.spectral import LipschitzConstraint, NormalizedWeights, SpectralConv, SpectralDense
from iresflow.nn.step import BLOCK_TYPES, BlockView, FlowStep

__all__ = [
    "ACTIVATIONS", "ActNorm", "Activation", "BLOCK_TYPES", "BlockView", "ContractiveBlock", "ContractiveResidual",
    "ExactLogDet",
    "FixedPointInfo", "FixedPointSolver", "FlowStep", "INVERSE_INFO", "IResNetBlock", "Invertible",
    "LipschitzConstraint", "MonotoneBlock", "NormalizedWeights", "PowerSeries", "ResidualSpec", "Roulette",
    "SpectralConv", "SpectralDense", "Squeeze", "clipswish", "cpila", "get_activation", "injective_pad", "inverse_info",
    "lipswish", "pila", "register_activation", "squeeze", "unsqueeze",
]
