"""The built-in data sets (iris, digits, blobs) and load_dataset (``_datasets/_builtin.py``)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from softmax_jax.train._datasets import (
    DataError,
    load_dataset,
    load_digits,
    load_iris,
    make_blobs,
)

from _util import IRIS_CLASSES, IRIS_FEATURES, write_data_file

TOY = "a,b,kind\n1,2,dog\n3,4,cat\n5,6,dog\n"


# Built-in


def test_iris():
  ds = load_iris()
  assert ds.name == "iris"
  assert ds.x.shape == (150, 4) and ds.x.dtype == np.float64
  assert ds.y.shape == (150,) and ds.y.dtype == np.int32
  assert ds.class_names == IRIS_CLASSES
  assert ds.feature_names == IRIS_FEATURES
  assert (ds.n_samples, ds.n_features, ds.n_classes) == (150, 4, 3)
  assert np.bincount(ds.y).tolist() == [50, 50, 50]
  np.testing.assert_array_equal(ds.x[0], [5.1, 3.5, 1.4, 0.2])
  assert ds.class_names[ds.y[0]] == "setosa"
  np.testing.assert_array_equal(ds.x[-1], [5.9, 3.0, 5.1, 1.8])
  assert ds.class_names[ds.y[-1]] == "virginica"
  assert ds.x.sum() == pytest.approx(2078.7)
  assert "Fisher" in ds.citation and "CC BY 4.0" in ds.citation


def test_digits():
  ds = load_digits()
  assert ds.name == "digits"
  assert ds.x.shape == (1797, 64) and ds.x.dtype == np.float64
  assert ds.n_classes == 10
  assert ds.class_names == tuple(str(d) for d in range(10))
  assert ds.feature_names == tuple(f"pixel_{i}" for i in range(64))
  assert np.bincount(ds.y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
  assert ds.y[:10].tolist() == list(range(10))
  assert ds.x[0, :16].tolist() == [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0]
  assert ds.x.min() == 0 and ds.x.max() == 16
  assert np.array_equal(ds.x, np.round(ds.x))
  assert ds.x.sum() == 561718
  assert "Alpaydin" in ds.citation


def test_shipped_digits_file_is_deterministic_gzip():
  from softmax_jax.train._datasets._builtin import DATA_DIR

  raw = (DATA_DIR / "digits.csv.gz").read_bytes()
  assert raw[:2] == b"\x1f\x8b" and raw[4:8] == b"\0\0\0\0"  # gzip magic, mtime 0
  assert (DATA_DIR / "README.md").is_file()


# make_blobs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, f, c", [(10, 2, 3), (1000, 5, 4), (7, 1, 7)])
def test_blobs_shape_dtype_balance(n, f, c, dtype):
  ds = make_blobs(n, f, c, seed=3, dtype=dtype)
  assert ds.x.shape == (n, f) and ds.x.dtype == dtype
  assert ds.y.shape == (n,) and ds.y.dtype == np.int32
  assert ds.class_names == tuple(str(k) for k in range(c))
  assert ds.feature_names == tuple(f"x{j}" for j in range(f))
  counts = np.bincount(ds.y, minlength=c)
  assert counts.sum() == n and counts.max() - counts.min() <= 1
  assert counts.tolist() == [n // c + (k < n % c) for k in range(c)]
  assert np.isfinite(ds.x).all()


def test_blobs_deterministic_and_seed_dependent():
  a, b = make_blobs(200, 3, seed=5), make_blobs(200, 3, seed=5)
  np.testing.assert_array_equal(a.x, b.x)
  np.testing.assert_array_equal(a.y, b.y)
  c = make_blobs(200, 3, seed=6)
  assert not np.array_equal(a.x, c.x)
  assert not np.array_equal(a.y, c.y)


def test_blobs_are_clusters():
  ds = make_blobs(6000, 3, 3, seed=0, cluster_std=0.5, center_box=4.0)
  for k in range(3):
    pts = ds.x[ds.y == k]
    assert np.all(np.abs(pts.mean(axis=0)) <= 4.0 + 0.05)
    np.testing.assert_allclose(pts.std(axis=0), 0.5, rtol=0.1)
  exact = make_blobs(9, 2, 3, seed=1, cluster_std=0.0)
  for k in range(3):
    assert len(np.unique(exact.x[exact.y == k], axis=0)) == 1


def test_blobs_large_float32_without_float64_temporaries():
  n, f = 250_000, 64
  tracemalloc.start()
  try:
    ds = make_blobs(n, f, 10, seed=0, dtype=np.float32)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert ds.x.dtype == np.float32 and ds.x.shape == (n, f)
  assert ds.x.nbytes == n * f * 4
  assert peak < 1.3 * ds.x.nbytes  # a full float64 copy would need 3x
  assert np.bincount(ds.y).tolist() == [n // 10] * 10


@pytest.mark.parametrize(
    "kwargs, name",
    [
      ({"n_classes": 1}, "n_classes"),
      ({"n_classes": 0}, "n_classes"),
      ({"n_samples": 2, "n_classes": 3}, "n_samples"),
      ({"n_samples": 0}, "n_samples"),
      ({"n_samples": 10.5}, "n_samples"),
      ({"n_features": 0}, "n_features"),
      ({"n_features": True}, "n_features"),
      ({"seed": -1}, "seed"),
      ({"cluster_std": -1.0}, "cluster_std"),
      ({"cluster_std": float("nan")}, "cluster_std"),
      ({"center_box": 0.0}, "center_box"),
      ({"dtype": np.int32}, "dtype"),
      ({"dtype": np.float16}, "dtype"),
    ],
)
def test_blobs_validation(kwargs, name):
  with pytest.raises(ValueError, match=name):
    make_blobs(**kwargs)


# load_dataset


@pytest.mark.parametrize("spec, shape", [("iris", (150, 4)), ("Digits", (1797, 64))])
def test_load_dataset_builtin(spec, shape):
  ds = load_dataset(spec)
  assert ds.name == spec.lower() and ds.x.shape == shape


def test_load_dataset_blobs():
  ds = load_dataset("blobs", n_samples=40, n_features=3, n_classes=4, seed=2)
  ref = make_blobs(40, 3, 4, seed=2)
  np.testing.assert_array_equal(ds.x, ref.x)
  np.testing.assert_array_equal(ds.y, ref.y)


@pytest.mark.parametrize("name", ["data.csv", "data.csv.gz"])
def test_load_dataset_csv(tmp_path, name):
  path = write_data_file(tmp_path, TOY, name)
  for spec in (str(path), path):
    ds = load_dataset(spec, label="kind")
    assert ds.name == "data" and ds.class_names == ("cat", "dog")
  assert load_dataset(str(path)).class_names == ("cat", "dog")  # default: last column
  with pytest.raises(DataError, match=r"line 2, column 'kind' \(3\): 'dog' is not a number"):
    load_dataset(str(path), label=0)  # the label argument reaches load_csv


@pytest.mark.parametrize(
    "spec, match",
    [
      ("mnist", r"unknown data set 'mnist'; choose 'iris', 'digits', 'blobs'"),
      ("{tmp}/missing.csv", r"missing\.csv'.*does not exist; choose 'iris'"),
      ("some/dir/file", r"does not exist; choose"),
      ("{tmp}/data.txt", r"data\.txt'.*not a \.csv or \.csv\.gz file"),
      ("{tmp}", r"is a directory"),
    ],
)
def test_load_dataset_errors(tmp_path, spec, match):
  (tmp_path / "data.txt").write_text(TOY)
  with pytest.raises(DataError, match=match):
    load_dataset(spec.format(tmp=tmp_path))
