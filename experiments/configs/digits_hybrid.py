"""Hybrid i-ResNet on 8x8 digits: one flow that is a density model and a classifier.

Loss = bits/dim + hybrid_weight * cross-entropy of a linear classifier on the latent z (Nalisnick et
al. 2019; the hybrid experiments of Residual Flows). Reports test bits/dim and test accuracy.
"""

from iresflow.train.config import default_config


def get_config():
  config = default_config()
  config.task = "hybrid"
  config.dataset = "digits"
  config.hybrid_weight = 1.0
  config.model = dict(stages=(4, 4), residual=dict(hidden=32, activation="lipswish", constraint=dict(coeff=0.9)))
  config.estimator = dict(kind="series", n_terms=5, n_probes=1, probe="gaussian", gradient="neumann")
  config.num_steps = 1500
  config.learning_rate = 2e-3
  return config
