"""A table of bad calls across the library: each fails at once with an error naming the problem."""

import jax
import jax.numpy as jnp
import pytest

from iresflow.core import fixed_point, logdet, spectral
from iresflow.data import DatasetNotFoundError, load_image_dataset, sample_toy, BatchSampler
from iresflow.models import IResNetClassifier, IResNetFlow
from iresflow.nn import ExactLogDet, LipschitzConstraint, PowerSeries, ResidualSpec, Roulette
from iresflow.train import default_config, train_and_evaluate

FLOW = dict(data_shape=(8, 8, 1), stages=(1,), residual=ResidualSpec(hidden=4))
EXACT = ExactLogDet()


def _train(tmp_path, **overrides):
  config = default_config()
  config.progress = False
  for key, value in overrides.items():
    config[key] = value
  return lambda: train_and_evaluate(config, str(tmp_path))


def _unknown_key():
  # experiments/train.py locks the config (lock_config=True): an unknown --config.KEY is an error.
  config = default_config()
  config.lock()
  config.no_such_setting = 3


CASES = [
    # (description, call, exception, message pattern)
    ("x of wrong rank", lambda _: IResNetFlow(**FLOW).init(jax.random.key(0), jnp.ones((2, 8, 8)), estimator=EXACT),
     ValueError, r"x: expected shape \(batch, 8, 8, 1\)"),
    ("x of wrong shape", lambda _: IResNetFlow(**FLOW).init(jax.random.key(0), jnp.ones((2, 4, 4, 1)),
                                                             estimator=EXACT),
     ValueError, "x: expected shape"),
    ("x of integer dtype", lambda _: IResNetFlow(**FLOW).init(jax.random.key(0), jnp.ones((2, 8, 8, 1), jnp.int32),
                                                               estimator=EXACT),
     TypeError, "x: expected a floating-point array"),
    ("NaN data", lambda _: IResNetFlow(**FLOW).init(jax.random.key(0), jnp.full((2, 8, 8, 1), jnp.nan),
                                                     estimator=EXACT),
     ValueError, "x: contains 128 NaN or infinite values"),
    ("no estimator for a log-density", lambda _: IResNetFlow(**FLOW).init(jax.random.key(0), jnp.ones((2, 8, 8, 1))),
     TypeError, "estimator"),
    ("an estimator that is not one", lambda _: IResNetFlow(**FLOW).init(jax.random.key(0), jnp.ones((2, 8, 8, 1)),
                                                                         estimator="exact"),
     TypeError, "estimator: expected a log-det estimator"),
    ("coeff >= 1", lambda _: LipschitzConstraint(coeff=1.0),
     ValueError, r"coeff: expected a contraction coefficient in the open interval \(0, 1\)"),
    ("coeff <= 0", lambda _: ResidualSpec(constraint=LipschitzConstraint(coeff=-0.5)), ValueError, "coeff"),
    ("unconstrained flow", lambda _: IResNetFlow(**{**FLOW, "residual": ResidualSpec(constraint=LipschitzConstraint(
        coeff=None))}).init(jax.random.key(0), jnp.ones((2, 8, 8, 1)), estimator=EXACT), ValueError, "coeff"),
    ("classifier input of another shape", lambda _: IResNetClassifier(data_shape=(4, 4, 1), num_classes=2,
                                                                        stages=(1,)).init(
        jax.random.key(0), jnp.ones((2, 6, 6, 1))), ValueError, r"x: expected images \(batch, 4, 4, 1\)"),
    ("coeff >= 1 in eq. 2", lambda _: spectral.soft_normalize(jnp.ones(2), 1.0, 1.5), ValueError, "coeff"),
    ("negative power iterations", lambda _: LipschitzConstraint(n_power_iterations=-1), ValueError,
     "n_power_iterations"),
    ("zero series terms", lambda _: PowerSeries(n_terms=0), ValueError, "n_terms"),
    ("negative series terms", lambda _: logdet.power_series_logdet(
        jax.random.key(0), lambda z: z, jnp.ones((1, 2)), n_terms=-2), ValueError, "n_terms"),
    ("negative inverse iterations", lambda _: fixed_point.fixed_point_inverse(lambda z: z, jnp.ones((1, 2)),
                                                                            max_iters=-1),
     ValueError, "max_iters"),
    ("unknown estimator kind in a config", lambda tmp: _train(tmp, estimator=dict(kind="stochastic"))(),
     ValueError, "estimator.kind: expected one of"),
    ("unknown roulette distribution", lambda _: Roulette(distribution="binomial"), ValueError, "distribution"),
    ("unknown activation", lambda _: ResidualSpec(activation="gelu"), ValueError, "activation: expected one of"),
    ("unknown residual setting in a config", lambda tmp: _train(tmp, model=dict(residual=dict(width=8)))(),
     ValueError, r"residual: unknown setting\(s\) \['width'\]"),
    ("spatial size not divisible by the squeezes", lambda _: IResNetFlow(
        data_shape=(6, 6, 1), stages=(1, 1)).init(jax.random.key(0), jnp.ones((2, 6, 6, 1)), estimator=EXACT),
     ValueError, "divisible by 2"),
    ("unknown image dataset", lambda _: load_image_dataset("imagenet"), ValueError, "unknown image dataset"),
    ("unknown toy density", lambda _: sample_toy("banana", 4), ValueError, "unknown toy density"),
    ("unknown dataset in a config", lambda tmp: _train(tmp, dataset="svhn")(), ValueError, "config.dataset"),
    ("unknown config key", lambda _: _unknown_key(), AttributeError, "no_such_setting"),
    ("workdir not writable", lambda tmp: (tmp / "f").write_text("x") and _train(tmp / "f" / "run")(),
     ValueError, "workdir"),
    ("TFDS data missing offline", lambda tmp: load_image_dataset("cifar10", data_dir=str(tmp)),
     DatasetNotFoundError, "tfds build cifar10"),
    ("batch larger than the dataset", lambda _: BatchSampler(10, 32, seed=0), ValueError, "batch_size"),
    ("batch not divisible by processes", lambda _: BatchSampler(100, 30, seed=0, process_count=4),
     ValueError, "not divisible by the 4 processes"),
    ("unknown probe", lambda _: PowerSeries(probe="uniform"), ValueError, "probe"),
    ("eval batch not divisible by devices", lambda tmp: _train(tmp, eval_batch_size=0)(), ValueError,
     "config.eval_batch_size"),
    ("unknown optimizer", lambda tmp: _train(tmp, optimizer="lion")(), ValueError, "optimizer"),
    ("non-positive steps", lambda tmp: _train(tmp, num_steps=0)(), ValueError, "config.num_steps"),
]


@pytest.mark.parametrize("description,call,error,match", CASES, ids=[c[0] for c in CASES])
def test_bad_call_raises_a_named_error(tmp_path, description, call, error, match):
  with pytest.raises(error, match=match):
    call(tmp_path)


def test_the_table_is_large_enough():
  assert len(CASES) >= 20


def test_batch_not_divisible_by_devices_is_named():
  from iresflow.train import sharding

  class FourDeviceMesh:
    size = 4

  with pytest.raises(ValueError, match="batch_size: 6 is not divisible by the 4 devices"):
    sharding.check_batch_size(6, FourDeviceMesh())
