"""i-ResNet on real MNIST for 2 CPU cores and a 20-minute budget: the recipe search's best i-ResNet.

``experiments/mnist_search.py`` tried 13 settings of this ~55,000-parameter flow for 5 CPU-minutes each
and ranked them on held-out training images (docs/mnist_search.md; what each change did: the guide's
"MNIST recipes on a CPU"). At this budget the winners buy more steps or bigger ones: a larger learning
rate and the Neumann gradient (no backward pass through the series). The search's 20-minute final round
then preferred holding the learning rate and taking it linearly to 0 over the last quarter of training
(``final_decay``). ``experiments/mnist_density.py`` trains this config for 20 minutes of wall-clock and
reports test bits/dim (docs/mnist_density.md); ``experiments/train.py`` runs it as any config
(``num_steps``: about what 20 minutes bought in the search's final round on 2 cores, so that the decay
ends with about that budget; a quieter machine buys more steps in 20 minutes)::

    python experiments/train.py --config experiments/configs/mnist_iresnet_cpu.py \\
        --workdir workdirs/mnist_iresnet_cpu --config.data_dir=$HOME/tensorflow_datasets

The search's fixed protocol (logit alpha 1e-6, 100 warm-up steps, clipping at 1, no EMA, one probe) is
set here too; ``mnist_search.setting_from_config`` reads the config back and a test checks that it is
the search's winner.
"""

from iresflow.train.config import default_config


def get_config():
  config = default_config()
  config.dataset = "mnist"
  # 28x28x1 -> squeeze -> 14x14x4: 4 blocks -> squeeze -> 7x7x16: 4 blocks; g = 3x3 -> 1x1 -> 3x3 convolutions.
  config.model = dict(stages=(4, 4), initial_squeeze=True, factor_out=False,
                      residual=dict(hidden=32, activation="lipswish", constraint=dict(coeff=0.9)))
  config.estimator.kind = "series"
  config.estimator.n_terms = 5
  config.estimator.gradient = "neumann"
  config.eval_estimator.kind = "roulette"  # unbiased test bits/dim (20 exact terms, a geometric tail)
  config.eval_estimator.n_exact_terms = 20
  config.logit_alpha = 1e-6
  config.optimizer = "adam"
  config.learning_rate = 3e-3
  config.schedule = "final_decay"
  config.warmup_steps = 100
  config.grad_clip = 1.0
  config.ema_decay = 0.0
  config.batch_size = 64
  config.num_steps = 2800
  config.checkpoint_every = 1000
  config.log_every = 100
  return config
