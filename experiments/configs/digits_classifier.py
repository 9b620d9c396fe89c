"""i-ResNet classifier on scikit-learn's 8x8 digits (offline): 3 stages of 2 blocks, c = 0.9.

--config.model.residual.constraint.coeff=None gives the unconstrained ResNet twin.
"""

from iresflow.train.config import default_config


def get_config():
  config = default_config()
  config.task = "classification"
  config.dataset = "digits"
  config.model = dict(stages=(2, 2, 2), stage_hidden=(32, 32, 64), injective_padding=3,
                      residual=dict(activation="elu", constraint=dict(coeff=0.9)))
  config.optimizer = "adam"
  config.learning_rate = 2e-3
  config.weight_decay = 0.0
  config.ema_decay = 0.0
  config.num_steps = 1000
  config.batch_size = 64
  return config
