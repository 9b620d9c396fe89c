"""i-ResNet flow on scikit-learn's 8x8 digits (offline; 17 levels): the demo job (a few minutes, 2 CPUs).

Two stages of 4 blocks (4x4x4 then 2x2x16 after squeezes), 3x3 -> 1x1 -> 3x3 convolutions with 32
hidden channels, ELU, c = 0.9; 5-term series for training, exact log-det for test bits/dim.
What this config chooses, and why: 32 hidden channels (digits are tiny; the library's 64 doubles the
step time for no gain here), ELU (the i-ResNet paper's activation; LipSwish is the library's, Residual
Flows'); everything else is the library's default (``iresflow.train.default_config``).
"""

from iresflow.train.config import default_config


def get_config():
  config = default_config()
  config.dataset = "digits"
  config.model.stages = (4, 4)
  config.model.residual.hidden = 32
  config.model.residual.activation = "elu"
  config.num_steps = 1500
  config.batch_size = 64
  config.learning_rate = 2e-3
  config.checkpoint_every = 500
  return config
