"""Default training configuration; experiment configs start from it and override what they change.

Every key, with its meaning:

* ``task``: ``'density'``, ``'classification'`` or ``'hybrid'`` (one flow that is a density model and a
  classifier: loss = bits/dim + ``hybrid_weight`` * cross-entropy).
* ``dataset``: ``'digits'``, ``'mnist_small'``, a TFDS name (``mnist``, ``fashion_mnist``, ``cifar10``,
  ``cifar100``, ``svhn_cropped``) or a 2-D toy (``8gaussians``, ``checkerboard``, ...).
  ``data_dir``: TFDS data directory; ``download``: let TFDS download (needs internet + TensorFlow).
* ``model``: keyword arguments of ``IResNetFlow`` / ``IResNetClassifier``.
* ``logdet``: training estimator (``mode``, ``n_terms``, ``n_probes``, ``probe``);
  ``eval_logdet``: the one for test bits/dim (``'exact'`` for small data, else many terms).
* ``logit_alpha``: logit transform parameter (None: data - 0.5).
* optimisation: ``optimizer`` (adam/adamax/sgd), ``learning_rate``, ``warmup_steps``, ``schedule``
  (constant/cosine), ``grad_clip``, ``weight_decay``, ``ema_decay`` (0 disables EMA), ``batch_size``
  (global, divisible by the device count), ``num_steps``.
* ``augment_padding``, ``augment_flip``: classification augmentation (random crop, horizontal flip).
* logging: ``log_every``, ``checkpoint_every`` (0: only at the end), ``progress`` (progress bar).
* evaluation: ``eval_batch_size``, ``num_eval_examples`` (0: all), ``num_samples``, ``inverse``
  (``atol``, ``rtol``, ``max_iters``, and ``precision``, default ``'highest'``; see ``InverseOptions``),
  ``eval_refresh_iterations`` (norm-estimator refreshes for the
  evaluated parameters).
* ``toy_train_size``, ``toy_test_size``: sizes of generated 2-D data sets.
"""

from __future__ import annotations

import ml_collections


def default_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.task = "density"
  config.hybrid_weight = 1.0
  config.dataset = "digits"
  config.data_dir = ml_collections.config_dict.placeholder(str)
  config.download = False
  config.seed = 0

  config.model = ml_collections.ConfigDict(dict(
      stages=(4, 4), hidden=32, coeff=0.9, activation="elu", kernel_sizes=(3, 1, 3)))
  config.logdet = ml_collections.ConfigDict(dict(mode="series", n_terms=5, n_probes=1, probe="gaussian"))
  config.eval_logdet = ml_collections.ConfigDict(dict(mode="exact", n_terms=20, n_probes=4, probe="gaussian"))
  config.logit_alpha = ml_collections.config_dict.placeholder(float)

  config.optimizer = "adam"
  config.learning_rate = 1e-3
  config.warmup_steps = 100
  config.schedule = "constant"
  config.grad_clip = 1.0
  config.weight_decay = 0.0
  config.ema_decay = 0.999
  config.batch_size = 64
  config.num_steps = 2000

  config.augment_padding = 0
  config.augment_flip = False

  config.log_every = 50
  config.checkpoint_every = 500
  config.progress = True

  config.eval_batch_size = 128
  config.num_eval_examples = 0
  config.num_samples = 64
  config.inverse = ml_collections.ConfigDict(dict(atol=1e-6, rtol=1e-6, max_iters=500, precision="highest"))
  config.eval_refresh_iterations = 10

  config.toy_train_size = 20000
  config.toy_test_size = 5000
  return config
