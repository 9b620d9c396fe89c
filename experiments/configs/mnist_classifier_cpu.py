"""MNIST classifier sized for 2 CPU cores (experiments/mnist_classification.py): 3 stages of 2 blocks.

The digits classifier's shape (injective padding to 4 channels, 28 -> 14 -> 7 by invertible
downsampling, 16-32-64 hidden channels, ELU, c = 0.9) on the 60,000 real training images; the paper's
model is ``mnist_classifier.py`` (7-7-7 blocks, 32-64-128 channels), a GPU-sized run.
--config.model.residual.constraint.coeff=None gives the unconstrained ResNet twin.
"""

from iresflow.train.config import default_config


def get_config():
  config = default_config()
  config.task = "classification"
  config.dataset = "mnist"
  config.model = dict(stages=(2, 2, 2), stage_hidden=(16, 32, 64), injective_padding=3,
                      residual=dict(activation="elu", constraint=dict(coeff=0.9)))
  config.optimizer = "adam"
  config.learning_rate = 2e-3
  config.schedule = "cosine"
  config.weight_decay = 0.0
  config.ema_decay = 0.0
  config.num_steps = 3000
  config.batch_size = 64
  config.eval_batch_size = 500
  config.checkpoint_every = 0
  return config
