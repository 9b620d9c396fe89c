"""MNIST classifier (needs prepared TFDS data): the official classifier script's shape, 7-7-7 blocks.

Official: 32-64-128 channels, c = 0.9, injective padding, SGD 0.1 with weight decay 5e-4.
"""

from iresflow.train.config import default_config


def get_config():
  config = default_config()
  config.task = "classification"
  config.dataset = "mnist"
  config.model = dict(stages=(7, 7, 7), stage_hidden=(32, 64, 128), injective_padding=3,
                      residual=dict(activation="elu", constraint=dict(coeff=0.9)))
  config.optimizer = "sgd"
  config.learning_rate = 0.1
  config.weight_decay = 5e-4
  config.schedule = "cosine"
  config.ema_decay = 0.0
  config.batch_size = 128
  config.num_steps = 30_000
  return config
