"""Monotone Flow (Ahn, Kim, Park, NeurIPS 2022) on CIFAR-10 (needs prepared TFDS data).

``idensenet_cifar10.py`` with Monotone Flows' block: the Cayley transform ``2 (I + g)^{-1} - I`` of the
same DenseNet ``g`` (``iresflow.nn.MonotoneBlock``), whose forward pass is a fixed-point solve (here to
1e-5, at most 1000 iterations; an example that does not converge stops training with NaN) and whose
log-det is the odd-power series. Ahn et al. build on i-DenseNets' architecture and settings as here;
their CPila activation is not implemented (CLipSwish stands in), so this is the block, not their full
recipe.
"""

from iresflow.train.config import default_config


def get_config():
  config = default_config()
  config.dataset = "cifar10"
  config.model = dict(stages=(16, 16, 16), factor_out=False,
                      residual=dict(hidden=98, kernel_sizes=(3, 3, 3, 1), activation="clipswish",
                                    architecture="densenet", constraint=dict(coeff=0.98)))
  config.model.block_type = "monotone"
  config.model.forward_solver = dict(atol=1e-5, rtol=1e-5, max_iters=1000)
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
