"""i-DenseNet on real MNIST for 2 CPU cores and a 20-minute budget: the recipe search's best.

``mnist_residual_flow_cpu.py`` with i-DenseNets' residual function (Perugachi-Diaz et al. 2021): a
Lipschitz DenseNet of three 3x3 convolutions and a 1x1 back to the block's channels, CLipSwish, a growth
of 7 channels per layer (the i-ResNet's ~55,000 parameters). The settings below are the best of the
search's 13 i-DenseNet trials (docs/mnist_search.md), with the learning rate held and then taken
linearly to 0 over the last quarter of training, which the search's 20-minute final round preferred
(``num_steps``: about what 20 minutes bought in the final round, so that the decay ends with the budget)::

    python experiments/train.py --config experiments/configs/mnist_idensenet_cpu.py \\
        --workdir workdirs/mnist_idensenet_cpu --config.data_dir=$HOME/tensorflow_datasets
"""

import os

from iresflow.train.config import load_config


def get_config():
  config = load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist_residual_flow_cpu.py"))
  config.model.residual = dict(hidden=7, kernel_sizes=(3, 3, 3, 1), activation="clipswish", architecture="densenet",
                               constraint=dict(coeff=0.98))
  config.estimator.n_exact_terms = 1
  config.num_steps = 2200
  return config
