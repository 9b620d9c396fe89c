"""MNIST density model (needs prepared TFDS data; see README): the paper's setting at reduced depth.

The paper's MNIST model has 21 blocks; the official script uses c = 0.9, 5 series terms, Adamax with
learning rate 0.003, logit transform alpha = 1e-6. Test bits/dim use 20 series terms (the truncation
bias bound is reported next to it).
"""

from iresflow.train.config import default_config


def get_config():
  config = default_config()
  config.dataset = "mnist"
  # 28x28x1 -> 14x14x4 -> 7x7x16: the first stage at full resolution (the official strides 1, 2, 2),
  # since 28 is not divisible by 2^3.
  config.model = dict(stages=(7, 7, 7), factor_out=False, fc_blocks=0, initial_squeeze=False,
                      residual=dict(hidden=128, activation="elu", constraint=dict(coeff=0.9)))
  config.logit_alpha = 1e-6
  config.optimizer = "adamax"
  config.learning_rate = 3e-3
  config.batch_size = 64
  config.num_steps = 100_000
  config.eval_estimator = dict(kind="series", n_terms=20, n_probes=4, probe="gaussian")
  config.checkpoint_every = 2000
  config.log_every = 100
  config.num_eval_examples = 0
  return config
