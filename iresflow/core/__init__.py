"""The pure-function core: no Flax, no state; every function is jittable and vmappable.

Modules (each readable on its own):

* :mod:`~iresflow.core.spectral` -- spectral norms: power iteration, Lanczos, eq. (2), rigorous bounds.
* :mod:`~iresflow.core.fixed_point` -- the inverse (Algorithm 1) with implicit gradients.
* :mod:`~iresflow.core.logdet` -- ``ln det(I + J_g)`` (and the Cayley transform's): power series (Algorithm 2),
  roulette, exact, bounds.
* :mod:`~iresflow.core.estimators` -- the log-det estimators as settings objects.
* :mod:`~iresflow.core.precision` -- matmul precision for the computations that must be accurate.
* :mod:`~iresflow.core.compilation` -- :func:`jit_run_once`: programs that run once (initialisation)
  compiled without LLVM's optimisation passes on CPU.
* :mod:`~iresflow.core.loops` -- rolled or unrolled loops per backend, block kind and gradient (blocks
  and series terms unrolled on CPU by default, fully connected blocks with the Neumann gradient rolled).

The names below are the public API of the core; everything else is an implementation detail.
"""

from iresflow.core import compilation, estimators, fixed_point, logdet, loops, precision, spectral
from iresflow.core.compilation import jit_run_once
from iresflow.core.estimators import ExactLogDet, LogDetEstimator, PowerSeries, Roulette
from iresflow.core.fixed_point import (FixedPointInfo, FixedPointSolver, banach_iterations, fixed_point_inverse,
                                       merge_infos)
from iresflow.core.logdet import (accumulation_dtype, exact_logdet, exact_series, logdet_bounds,
                                  power_series_logdet, residual_jacobians, roulette_logdet, sample_probes,
                                  series_coefficient, series_truncation_bound)
from iresflow.core.loops import unroll_by_default
from iresflow.core.precision import with_matmul_precision
from iresflow.core.spectral import (conv_norm_bound, conv_operator_norm, dense_norm_bound, lanczos_iteration,
                                    power_iteration, soft_normalize)

__all__ = [
    # modules
    "compilation", "estimators", "fixed_point", "logdet", "loops", "precision", "spectral",
    # compilation
    "jit_run_once",
    # spectral norms (Sec. 2.1)
    "conv_norm_bound", "conv_operator_norm", "dense_norm_bound", "lanczos_iteration", "power_iteration",
    "soft_normalize",
    # the inverse (Algorithm 1)
    "FixedPointInfo", "FixedPointSolver", "banach_iterations", "fixed_point_inverse", "merge_infos",
    # log-determinants (Sec. 3, Algorithm 2, Residual Flows)
    "ExactLogDet", "LogDetEstimator", "PowerSeries", "Roulette", "accumulation_dtype", "exact_logdet",
    "exact_series", "logdet_bounds", "power_series_logdet", "residual_jacobians", "roulette_logdet",
    "sample_probes", "series_coefficient", "series_truncation_bound",
    # precision and loops
    "with_matmul_precision", "unroll_by_default",
]
