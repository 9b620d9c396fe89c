"""Monotone Flow (Ahn, Kim, Park, NeurIPS 2022) on scikit-learn's 8x8 digits.

``idensenet_digits.py`` with Monotone Flows' block: the Cayley transform ``2 (I + g)^{-1} - I`` of the
same DenseNet ``g`` (``iresflow.nn.MonotoneBlock``), whose forward pass is a fixed-point solve (here to
1e-5, at most 1000 iterations; an example that does not converge stops training with NaN) and whose
log-det is the odd-power series. Ahn et al. build on i-DenseNets' architecture and settings as here;
their CPila activation is not implemented (CLipSwish stands in), so this is the block, not their full
recipe.
"""

from iresflow.train.config import default_config


def get_config():
  config = default_config()
  config.dataset = "digits"
  config.model = dict(stages=(4, 4),
                      residual=dict(hidden=7, kernel_sizes=(3, 3, 3, 1), activation="clipswish",
                                    architecture="densenet", constraint=dict(coeff=0.98)))
  config.model.block_type = "monotone"
  config.model.forward_solver = dict(atol=1e-5, rtol=1e-5, max_iters=1000)
  config.estimator = dict(kind="roulette", n_exact_terms=2, distribution="geometric", geometric_p=0.5)
  config.num_steps = 1500
  config.batch_size = 64
  config.learning_rate = 2e-3
  config.ema_decay = 0.999
  config.grad_clip = 1.0
  config.checkpoint_every = 500
  return config
