"""i-ResNet flow on a 2-D toy density (Figure 2 of the paper): 10 fully connected blocks.

Choose the density with --config.dataset=checkerboard (8gaussians, 2spirals, moons, pinwheel, rings,
swissroll, circles).
"""

from iresflow.train.config import default_config


def get_config():
  config = default_config()
  config.dataset = "8gaussians"
  config.model = dict(stages=(), fc_blocks=10,
                      fc_residual=dict(hidden=64, dense_layers=3, activation="lipswish", constraint=dict(coeff=0.9)))
  config.eval_estimator.kind = "exact"
  config.batch_size = 500
  config.num_steps = 3000
  config.learning_rate = 1e-3
  config.ema_decay = 0.99
  return config
