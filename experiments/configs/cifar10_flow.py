"""CIFAR-10 density model (needs prepared TFDS data): the official script's shape, 16-16-16 blocks.

Official i-ResNet: 3 stages of 16 blocks with 512 hidden channels, c = 0.9, 5 series terms, Adamax
0.003, logit alpha = 0.05. Residual Flows: c = 0.98, LipSwish, Adam 1e-3, EMA 0.999, clipping 1.0.
"""

from iresflow.train.config import default_config


def get_config():
  config = default_config()
  config.dataset = "cifar10"
  config.model = dict(stages=(16, 16, 16), factor_out=False,
                      residual=dict(hidden=512, activation="elu", constraint=dict(coeff=0.9)))
  config.logit_alpha = 0.05
  config.optimizer = "adamax"
  config.learning_rate = 3e-3
  config.batch_size = 64
  config.num_steps = 200_000
  config.eval_estimator = dict(kind="series", n_terms=20, n_probes=4, probe="gaussian")
  config.checkpoint_every = 2000
  config.log_every = 100
  return config
