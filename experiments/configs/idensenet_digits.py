"""i-DenseNet (Perugachi-Diaz, Tomczak, Bhulai, NeurIPS 2021) on scikit-learn's 8x8 digits.

``residual_flow_digits.py`` with i-DenseNets' residual function (their Sec. 3 and Fig. 1): a Lipschitz
DenseNet of depth 3 (three 3x3 convolutions, each output concatenated to its input with learnable
weights eta_1^2 + eta_2^2 = 1) and a 1x1 convolution back to the block's channels, CLipSwish
activations, c = 0.98; everything else as the Residual Flow. The paper compares at an equal parameter
budget: the growth (channels each layer adds before CLipSwish doubles them) is chosen so that the model
has within 10% of the Residual Flow's parameters (checked in tests/experiments/test_configs.py).
"""

import os

from iresflow.train.config import load_config


def get_config():
  config = load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), "residual_flow_digits.py"))
  config.model.residual = dict(hidden=7, kernel_sizes=(3, 3, 3, 1), activation="clipswish",
                               architecture="densenet", constraint=dict(coeff=0.98))
  return config
