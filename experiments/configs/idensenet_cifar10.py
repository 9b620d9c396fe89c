"""i-DenseNet (Perugachi-Diaz, Tomczak, Bhulai, NeurIPS 2021) on CIFAR-10 (needs prepared TFDS data).

``residual_flow_cifar10.py`` with i-DenseNets' residual function (their Sec. 3 and Fig. 1): a Lipschitz
DenseNet of depth 3 (three 3x3 convolutions, each output concatenated to its input with learnable
weights eta_1^2 + eta_2^2 = 1) and a 1x1 convolution back to the block's channels, CLipSwish
activations, c = 0.98; everything else as the Residual Flow. The paper compares at an equal parameter
budget: the growth (channels each layer adds before CLipSwish doubles them) is chosen so that the model
has within 10% of the Residual Flow's parameters (checked in tests/experiments/test_configs.py).
Their CIFAR-10 result: 3.25 bits/dim (Residual Flow 3.28).
"""

from iresflow.train.config import default_config


def get_config():
  config = default_config()
  config.dataset = "cifar10"
  config.model = dict(stages=(16, 16, 16), factor_out=False,
                      residual=dict(hidden=98, kernel_sizes=(3, 3, 3, 1), activation="clipswish",
                                    architecture="densenet", constraint=dict(coeff=0.98)))
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
