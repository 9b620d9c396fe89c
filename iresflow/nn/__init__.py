"""Flax linen modules: contractive layers, activations, ActNorm, reshapes, the i-ResNet block."""

from iresflow.nn.actnorm import ActNorm
from iresflow.nn.activations import ACTIVATIONS, LIPSCHITZ_CONSTANTS, lipswish
from iresflow.nn.block import InverseOptions, IResNetBlock, LogDetOptions
from iresflow.nn.reshape import injective_pad, squeeze, unsqueeze
from iresflow.nn.residual import ContractiveResidual
from iresflow.nn.spectral import LipschitzConstraint, SpectralConv, SpectralDense
from iresflow.nn.step import FlowStep

__all__ = [
    "ACTIVATIONS", "ActNorm", "ContractiveResidual", "FlowStep", "InverseOptions", "IResNetBlock",
    "LIPSCHITZ_CONSTANTS", "LipschitzConstraint", "LogDetOptions", "SpectralConv", "SpectralDense", "injective_pad", "lipswish",
    "squeeze", "unsqueeze",
]
