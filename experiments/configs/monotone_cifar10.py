"""Monotone Flow (Ahn, Kim, Park, NeurIPS 2022) on CIFAR-10 (needs prepared TFDS data).

``idensenet_cifar10.py`` with Monotone Flows' block: the Cayley transform ``2 (I + g)^{-1} - I`` of the
same DenseNet ``g`` (``iresflow.nn.MonotoneBlock``), whose forward pass is a fixed-point solve (here to
1e-5, at most 1000 iterations; an example that does not converge stops training with NaN) and whose
log-det is the odd-power series, and their CPila activation (``iresflow.nn.cpila``: Pila with k = 5 on
``[x - 0.2, -x - 0.2]``, divided by its Lipschitz constant) in place of CLipSwish. Ahn et al. build on
i-DenseNets' architecture and settings as here.
"""

import os

from iresflow.train.config import load_config


def get_config():
  config = load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), "idensenet_cifar10.py"))
  config.model.block_type = "monotone"
  config.model.residual.activation = "cpila"
  config.model.forward_solver = dict(atol=1e-5, rtol=1e-5, max_iters=1000)
  return config
