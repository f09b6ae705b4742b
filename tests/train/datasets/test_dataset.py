"""The containers: Dataset, split and Standardizer (``_datasets/_dataset.py``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from softmax_jax.train._datasets import (
  Dataset,
  Split,
  Standardizer,
  load_digits,
  load_iris,
  make_blobs,
  split,
)

from _util import IRIS_CLASSES, IRIS_FEATURES


def indexed(n_per_class, n_features: int = 2) -> Dataset:
  """A data set whose first feature is the row index, classes of the given sizes (shuffled)."""
  y = np.repeat(np.arange(len(n_per_class)), n_per_class)
  y = np.random.default_rng(123).permutation(y)
  x = np.zeros((y.size, n_features))
  x[:, 0] = np.arange(y.size)
  names = tuple(f"c{i}" for i in range(len(n_per_class)))
  return Dataset(x, y, names, tuple(f"f{j}" for j in range(n_features)), "indexed")


# Dataset


def test_dataset_subset_and_repr():
  ds = load_iris()
  sub = ds.subset([0, 50, 100])
  assert sub.y.tolist() == [0, 1, 2]
  assert sub.class_names == ds.class_names and sub.feature_names == ds.feature_names
  assert sub.subset(np.array([True, False, True])).y.tolist() == [0, 2]
  assert repr(ds) == "Dataset(name='iris', n_samples=150, n_features=4, n_classes=3)"
  assert ds.subset([]).x.shape == (0, 4)


@pytest.mark.parametrize(
    "x, y, match",
    [
      (np.zeros(3), [0, 1, 0], "2-D floating"),
      (np.zeros((3, 2), dtype=int), [0, 1, 0], "2-D floating"),
      (np.zeros((3, 2)), [0, 1], "one label per row"),
      (np.zeros((3, 2)), [0.0, 1.0, 0.0], "integer"),
      (np.zeros((3, 2)), [0, 2, 0], r"0\.\.1"),
      (np.zeros((3, 3)), [0, 1, 0], "feature names"),
    ],
)
def test_dataset_validation(x, y, match):
  with pytest.raises(ValueError, match=match):
    Dataset(x, np.asarray(y), ("a", "b"), ("u", "v"), "bad")


def test_dataset_casts_labels_to_int32():
  ds = Dataset(np.zeros((2, 1)), np.array([0, 1], dtype=np.int64), ["a", "b"], ["u"], "t")
  assert ds.y.dtype == np.int32 and ds.class_names == ("a", "b") and ds.feature_names == ("u",)


# split


def test_split_stratified_iris():
  parts = split(load_iris(), val_fraction=0.2, test_fraction=0.2, seed=0)
  assert isinstance(parts, Split)
  assert np.bincount(parts.train.y).tolist() == [30, 30, 30]
  assert np.bincount(parts.val.y).tolist() == [10, 10, 10]
  assert np.bincount(parts.test.y).tolist() == [10, 10, 10]
  for p in (parts.train, parts.val, parts.test):
    assert p.class_names == IRIS_CLASSES and p.feature_names == IRIS_FEATURES


@pytest.mark.parametrize("val, test", [(0.15, 0.2), (0.0, 0.3), (0.3, 0.0), (0.45, 0.45)])
def test_split_disjoint_cover_and_ordered(val, test):
  ds = indexed([40, 25, 9, 3, 2, 1])
  parts = split(ds, val_fraction=val, test_fraction=test, seed=1)
  ids = [p.x[:, 0].astype(int) for p in (parts.train, parts.val, parts.test)]
  np.testing.assert_array_equal(np.sort(np.concatenate(ids)), np.arange(ds.n_samples))
  for part, i in zip((parts.train, parts.val, parts.test), ids, strict=True):
    assert np.all(np.diff(i) > 0)  # rows keep their order in ds
    np.testing.assert_array_equal(part.y, ds.y[i])  # labels travel with their rows
  # every class with >= 1 sample (in particular >= 3) is in train
  assert set(parts.train.y.tolist()) == set(range(6))
  # per-class shares are the rounded fractions
  for k, size in enumerate([40, 25, 9]):
    assert abs(np.sum(parts.test.y == k) - test * size) <= 1
    assert abs(np.sum(parts.val.y == k) - val * size) <= 1


def test_split_deterministic_and_seed_dependent():
  ds = indexed([30, 30])
  a, b, c = split(ds, seed=4), split(ds, seed=4), split(ds, seed=5)
  for name in ("train", "val", "test"):
    np.testing.assert_array_equal(getattr(a, name).x, getattr(b, name).x)
  assert not np.array_equal(a.test.x, c.test.x)


def test_split_empty_val_keeps_shape_and_dtype():
  ds = make_blobs(60, 4, 3, dtype=np.float32)
  parts = split(ds, val_fraction=0.0)
  assert parts.val.x.shape == (0, 4) and parts.val.x.dtype == np.float32
  assert parts.val.y.shape == (0,) and parts.val.n_classes == 3
  assert parts.train.n_samples + parts.test.n_samples == 60


@pytest.mark.parametrize(
    "kwargs, name",
    [
      ({"val_fraction": -0.1}, "val_fraction"),
      ({"test_fraction": -0.1}, "test_fraction"),
      ({"val_fraction": float("nan")}, "val_fraction"),
      ({"test_fraction": 1.0}, "test_fraction"),
      ({"val_fraction": "0.1"}, "val_fraction"),
      ({"val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction \\+ test_fraction"),
    ],
)
def test_split_validation(kwargs, name):
  with pytest.raises(ValueError, match=name):
    split(indexed([10, 10]), **kwargs)


# Standardizer


def test_standardizer_uses_train_statistics_only():
  parts = split(load_iris(), seed=0)
  s = Standardizer.fit(parts.train.x)
  np.testing.assert_allclose(s.mean, parts.train.x.mean(axis=0))
  np.testing.assert_allclose(s.scale, parts.train.x.std(axis=0))
  z = s.transform(parts.test.x)
  np.testing.assert_allclose(z, (parts.test.x - parts.train.x.mean(0)) / parts.train.x.std(0))
  zt = s.transform(parts.train.x)
  np.testing.assert_allclose(zt.mean(axis=0), 0, atol=1e-12)
  np.testing.assert_allclose(zt.std(axis=0), 1, rtol=1e-12)


def test_standardizer_constant_columns():
  ds = load_digits()
  s = Standardizer.fit(ds.x)
  constant = ds.x.min(axis=0) == ds.x.max(axis=0)
  assert constant[0] and constant.sum() >= 2  # e.g. pixel_0 is always blank
  assert np.all(s.scale[constant] == 1.0)
  z = s.transform(ds.x)
  assert np.isfinite(z).all() and np.all(z[:, constant] == 0)
  # a constant column whose value is not exactly representable still gets scale 1
  s2 = Standardizer.fit(np.full((1000, 1), 0.1))
  assert s2.scale.tolist() == [1.0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_standardizer_keeps_dtype(dtype):
  x = make_blobs(100, 3, dtype=dtype).x
  s = Standardizer.fit(x)
  assert s.mean.dtype == np.float64
  assert s.transform(x).dtype == dtype
  assert s.transform(x.astype(int)).dtype == np.float64


def test_standardizer_round_trip():
  s = Standardizer.fit(make_blobs(50, 3).x)
  d = json.loads(json.dumps(s.to_dict()))
  assert set(d) == {"mean", "scale"}
  s2 = Standardizer.from_dict(d)
  np.testing.assert_array_equal(s2.mean, s.mean)
  np.testing.assert_array_equal(s2.scale, s.scale)


@pytest.mark.parametrize(
    "call",
    [
      lambda: Standardizer.fit(np.zeros((0, 3))),
      lambda: Standardizer.fit(np.zeros(3)),
      lambda: Standardizer.fit(np.array([[1.0], [np.nan]])),
      lambda: Standardizer.fit(np.ones((2, 2))).transform(np.ones((2, 3))),
      lambda: Standardizer.from_dict({"mean": [0.0]}),
      lambda: Standardizer.from_dict({"mean": [0.0], "scale": [0.0]}),
      lambda: Standardizer.from_dict({"mean": [0.0, 1.0], "scale": [1.0]}),
    ],
)
def test_standardizer_errors(call):
  with pytest.raises(ValueError):
    call()
