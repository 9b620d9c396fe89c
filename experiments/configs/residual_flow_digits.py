"""Residual Flow (Chen et al., NeurIPS 2019) on scikit-learn's 8x8 digits, the digits_flow skeleton.

The i-ResNet of ``digits_flow.py`` with Residual Flows' changes (Chen et al. 2019, Sec. 3-4 and their
training script): LipSwish instead of ELU, c = 0.98, the unbiased Russian-roulette log-det (2 exact
terms, geometric extra terms) with the Neumann-series gradient, EMA 0.999, gradient clipping 1.0.
Width and depth stay digits-sized (2 stages of 4 blocks, 32 hidden channels).
"""

from iresflow.train.config import default_config


def get_config():
  config = default_config()
  config.dataset = "digits"
  config.model = dict(stages=(4, 4), residual=dict(hidden=32, activation="lipswish", constraint=dict(coeff=0.98)))
  config.estimator = dict(kind="roulette", n_exact_terms=2, distribution="geometric", geometric_p=0.5)
  config.num_steps = 1500
  config.batch_size = 64
  config.learning_rate = 2e-3
  config.ema_decay = 0.999
  config.grad_clip = 1.0
  config.checkpoint_every = 500
  return config
