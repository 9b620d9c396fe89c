"""Residual Flow (Chen et al., NeurIPS 2019) on CIFAR-10 (needs prepared TFDS data).

Chen et al. 2019 (Sec. 5 and App. E): 3 scales of 16 residual blocks (16-16-16), ``g`` = 3x3 -> 1x1 ->
3x3 convolutions with 512 hidden channels and LipSwish, c = 0.98, ActNorm, the Russian-roulette
log-det with 2 exact terms and the Neumann-series gradient, Adam 1e-3, batch 64, EMA 0.999, gradient
clipping 1.0; logit transform alpha = 0.05. Their CIFAR-10 result: 3.28 bits/dim.
"""

from iresflow.train.config import default_config


def get_config():
  config = default_config()
  config.dataset = "cifar10"
  config.model = dict(stages=(16, 16, 16), factor_out=False,
                      residual=dict(hidden=512, activation="lipswish", constraint=dict(coeff=0.98)))
  config.estimator = dict(kind="roulette", n_exact_terms=2, distribution="geometric", geometric_p=0.5)
  config.eval_estimator = dict(kind="roulette", n_exact_terms=2, n_probes=4)
  config.logit_alpha = 0.05
  config.optimizer = "adam"
  config.learning_rate = 1e-3
  config.batch_size = 64
  config.ema_decay = 0.999
  config.grad_clip = 1.0
  config.num_steps = 200_000
  config.checkpoint_every = 2000
  config.log_every = 100
  return config
