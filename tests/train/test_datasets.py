"""Tests for the data sets, the CSV reader, splitting and standardisation."""

from __future__ import annotations

import gzip
import json
import re
import tracemalloc

import numpy as np
import pytest

from softmax_jax.train._datasets import (
    DataError,
    Dataset,
    Split,
    Standardizer,
    load_csv,
    load_dataset,
    load_digits,
    load_iris,
    make_blobs,
    read_features,
    split,
)

pytestmark = pytest.mark.x64

IRIS_CLASSES = ("setosa", "versicolor", "virginica")
IRIS_FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def write(tmp_path, text: str, name: str = "data.csv"):
  path = tmp_path / name
  if name.endswith(".gz"):
    path.write_bytes(gzip.compress(text.encode()))
  else:
    path.write_text(text)
  return path


def at(line: int, column: str | None = None, position: int | None = None) -> str:
  """Regex for ``data.csv, line N[, column 'name' (k)]`` in an error message."""
  s = rf"data\.csv, line {line}\b"
  if column is not None:
    s += re.escape(f", column {column!r} ({position})")
  return s


def indexed(n_per_class, n_features: int = 2) -> Dataset:
  """A data set whose first feature is the row index, classes of the given sizes (shuffled)."""
  y = np.repeat(np.arange(len(n_per_class)), n_per_class)
  y = np.random.default_rng(123).permutation(y)
  x = np.zeros((y.size, n_features))
  x[:, 0] = np.arange(y.size)
  names = tuple(f"c{i}" for i in range(len(n_per_class)))
  return Dataset(x, y, names, tuple(f"f{j}" for j in range(n_features)), "indexed")


# ---------------------------------------------------------------------------
# Built-in data sets
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# make_blobs
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# split
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Standardizer
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# load_csv: happy paths
# ---------------------------------------------------------------------------

TOY = "a,b,kind\n1,2,dog\n3,4,cat\n5,6,dog\n"


@pytest.mark.parametrize("label", ["kind", 2, -1])
def test_csv_label_by_name_or_index(tmp_path, label):
  ds = load_csv(write(tmp_path, TOY), label=label)
  assert ds.name == "data"
  assert ds.feature_names == ("a", "b")
  assert ds.class_names == ("cat", "dog")
  assert ds.y.tolist() == [1, 0, 1]
  np.testing.assert_array_equal(ds.x, [[1, 2], [3, 4], [5, 6]])


@pytest.mark.parametrize("label", ["a", 0, -3])
def test_csv_label_first_column(tmp_path, label):
  ds = load_csv(write(tmp_path, "a,b,c\nx,1,2\ny,3,4\n"), label=label, name="toy")
  assert ds.name == "toy" and ds.feature_names == ("b", "c") and ds.class_names == ("x", "y")


def test_csv_integer_labels_sorted_numerically(tmp_path):
  ds = load_csv(write(tmp_path, "f,y\n1,10\n2,2\n3,-1\n4,2.0\n5,+10\n"))
  assert ds.class_names == ("-1", "2", "10")
  assert ds.y.tolist() == [2, 1, 0, 1, 2]


def test_csv_mixed_labels_are_strings(tmp_path):
  ds = load_csv(write(tmp_path, "f,y\n1,10\n2,2\n3,other\n"))
  assert ds.class_names == ("10", "2", "other")
  assert ds.y.tolist() == [0, 1, 2]


def test_csv_whitespace_blank_lines_crlf_bom_gzip(tmp_path):
  text = "\ufeff a , b ,kind \r\n\r\n 1 , 2.5e0, dog\r\n   \r\n3,4,cat\r\n\r\n"
  for name in ("data.csv", "data.csv.gz"):
    ds = load_csv(write(tmp_path, text, name))
    assert ds.name == "data"
    assert ds.feature_names == ("a", "b")
    np.testing.assert_array_equal(ds.x, [[1, 2.5], [3, 4]])
    assert ds.y.tolist() == [1, 0]


def test_csv_quoted_cells(tmp_path):
  ds = load_csv(write(tmp_path, 'a,"b, c",kind\n1,"2",\'x\'\n3,4,"y z"\n'))
  assert ds.feature_names == ("a", "b, c") and ds.class_names == ("'x'", "y z")


# ---------------------------------------------------------------------------
# load_csv: errors, each naming file, line and column
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["", "NA", "NaN", "nan", "?"])
def test_csv_missing_value(tmp_path, cell):
  text = f"a,b,kind\n1,2,x\n\n3,{cell},y\n"
  with pytest.raises(DataError, match=at(4, "b", 2) + ": missing value"):
    load_csv(write(tmp_path, text))


def test_csv_not_a_number(tmp_path):
  text = "a,b,c,petal_width,kind\n" + "1,2,3,4,x\n" * 5 + "1,2,3,abc,y\n"
  with pytest.raises(DataError, match=at(7, "petal_width", 4) + ": 'abc' is not a number"):
    load_csv(write(tmp_path, text))


@pytest.mark.parametrize("cell", ["inf", "-inf", "Infinity", "1e400"])
def test_csv_not_finite(tmp_path, cell):
  with pytest.raises(DataError, match=at(3, "a", 1) + ": .* is not a finite number"):
    load_csv(write(tmp_path, f"a,b,kind\n1,2,x\n{cell},2,y\n"))


def test_csv_reports_first_bad_cell_in_file_order(tmp_path):
  text = "a,b,kind\n1,2,x\n1,inf,y\nabc,2,x\n1,2\n"
  with pytest.raises(DataError, match=at(3, "b", 2) + ": 'inf' is not a finite"):
    load_csv(write(tmp_path, text))
  text = "a,b,kind\n1,2,x\n?,2,\n"
  with pytest.raises(DataError, match=at(3, "a", 1) + ": missing value"):
    load_csv(write(tmp_path, text))


@pytest.mark.parametrize("row, found", [("1,2", 2), ("1,2,x,4", 4), (",", 2)])
def test_csv_wrong_cell_count(tmp_path, row, found):
  with pytest.raises(DataError, match=at(3) + f": expected 3 cells .* found {found}"):
    load_csv(write(tmp_path, f"a,b,kind\n1,2,x\n{row}\n"))


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_csv_empty_file(tmp_path, text):
  with pytest.raises(DataError, match=r"data\.csv: the file is empty"):
    load_csv(write(tmp_path, text))


def test_csv_header_without_rows(tmp_path):
  with pytest.raises(DataError, match=at(2) + ": the header is not followed by any data rows"):
    load_csv(write(tmp_path, "\na,b,kind\n\n"))


def test_csv_duplicate_column(tmp_path):
  with pytest.raises(DataError, match=at(1, "a", 3) + ": duplicate column name .*column 1"):
    load_csv(write(tmp_path, "a,b,a,kind\n1,2,3,x\n"))


def test_csv_empty_column_name(tmp_path):
  with pytest.raises(DataError, match=at(1) + ", column 2: empty column name"):
    load_csv(write(tmp_path, "a,,kind\n1,2,x\n"))


@pytest.mark.parametrize("labels, found", [("x,x", "'x'"), ("3,3.0", "'3'")])
def test_csv_one_class(tmp_path, labels, found):
  a, b = labels.split(",")
  with pytest.raises(DataError, match=rf"data\.csv: .*'kind' \(3\) has only one class, {found}"):
    load_csv(write(tmp_path, f"a,b,kind\n1,2,{a}\n3,4,{b}\n"))


def test_csv_no_feature_column(tmp_path):
  with pytest.raises(DataError, match=at(1) + ": no feature columns.*'kind' \\(1\\)"):
    load_csv(write(tmp_path, "kind\nx\ny\n"))


@pytest.mark.parametrize("cell", ["", "NA", "?"])
def test_csv_missing_label(tmp_path, cell):
  with pytest.raises(DataError, match=at(4, "kind", 3) + ": missing label"):
    load_csv(write(tmp_path, f"a,b,kind\n1,2,x\n1,2,y\n1,2,{cell}\n"))


def test_csv_non_integer_numeric_label(tmp_path):
  with pytest.raises(DataError, match=at(3, "kind", 3) + ": label '2.5' is a number but not an"):
    load_csv(write(tmp_path, "a,b,kind\n1,2,1\n1,2,2.5\n"))


@pytest.mark.parametrize("label, shown", [("species", "'species'"), (3, "4"),
                                          (-4, r"-4 \(counting from the end\)")])
def test_csv_unknown_label_column(tmp_path, label, shown):
  """Messages number columns from 1: index 3 is the fourth column."""
  pattern = at(1) + rf": there is no label column {shown} .*'a' \(1\), 'b' \(2\), 'kind' \(3\)"
  with pytest.raises(DataError, match=pattern):
    load_csv(write(tmp_path, TOY), label=label)


def test_csv_without_a_header_is_refused(tmp_path):
  with pytest.raises(DataError, match=at(1) + r": the first line is data, not a header"):
    load_csv(write(tmp_path, "1,2,0\n3,4,1\n5,6,0\n"))


def test_csv_label_wrong_type(tmp_path):
  with pytest.raises(TypeError, match="label"):
    load_csv(write(tmp_path, TOY), label=True)


def test_csv_missing_file_and_directory(tmp_path):
  with pytest.raises(DataError, match=r"nope\.csv: no such file"):
    load_csv(tmp_path / "nope.csv")
  (tmp_path / "dir.csv").mkdir()
  with pytest.raises(DataError, match=r"dir\.csv: is a directory"):
    load_csv(tmp_path / "dir.csv")


def test_csv_bad_gzip_and_encoding(tmp_path):
  (tmp_path / "data.csv.gz").write_bytes(b"a,b,kind\n1,2,x\n")
  with pytest.raises(DataError, match=r"data\.csv\.gz: not a valid gzip file"):
    load_csv(tmp_path / "data.csv.gz")
  (tmp_path / "data.csv").write_bytes(b"a,b,kind\n1,2,\xff\n")
  with pytest.raises(DataError, match=r"data\.csv: not UTF-8"):
    load_csv(tmp_path / "data.csv")


def test_data_error_is_value_error():
  assert issubclass(DataError, ValueError)


# ---------------------------------------------------------------------------
# read_features
# ---------------------------------------------------------------------------

NEW = "id,petal_width,kind,sepal_length,note\n7,0.2,setosa,5.1,a\n8,1.8,virginica,5.9,b\n"


def test_read_features_reordered_and_extra_columns(tmp_path):
  x, y = read_features(write(tmp_path, NEW), ["sepal_length", "petal_width"])
  assert y is None and x.dtype == np.float64
  np.testing.assert_array_equal(x, [[5.1, 0.2], [5.9, 1.8]])


def test_read_features_with_labels(tmp_path):
  path = write(tmp_path, NEW)
  x, y = read_features(path, ["petal_width"], label="kind", class_names=IRIS_CLASSES)
  assert y.dtype == np.int32 and y.tolist() == [0, 2]
  _, y = read_features(path, ["petal_width"], label="species", class_names=IRIS_CLASSES)
  assert y is None  # label column absent from the file


def test_read_features_integer_classes(tmp_path):
  path = write(tmp_path, "f,digit\n1,3\n2,3.0\n3,0\n")
  _, y = read_features(path, ["f"], label="digit", class_names=[str(d) for d in range(10)])
  assert y.tolist() == [3, 3, 0]


def test_read_features_missing_columns(tmp_path):
  pattern = at(1) + r": the header does not name the feature column\(s\) 'petal_length', 'x9'"
  with pytest.raises(DataError, match=pattern):
    read_features(write(tmp_path, NEW), ["petal_length", "petal_width", "x9"])


def test_read_features_no_header(tmp_path):
  with pytest.raises(DataError, match=at(1) + r": .*'a', 'b'.*header row"):
    read_features(write(tmp_path, "1,2\n3,4\n"), ["a", "b"])


def test_read_features_unknown_class(tmp_path):
  pattern = at(3, "kind", 3) + r": unknown class 'virginica'; the known classes are 'setosa'"
  with pytest.raises(DataError, match=pattern):
    read_features(write(tmp_path, NEW), ["petal_width"], label="kind", class_names=["setosa", "x"])


def test_read_features_bad_cells_checked(tmp_path):
  text = "b,a,c\n1,2,x\n1,abc,2\n"
  with pytest.raises(DataError, match=at(3, "a", 2) + ": 'abc' is not a number"):
    read_features(write(tmp_path, text), ["a", "b"])
  x, _ = read_features(write(tmp_path, "b,a,c\n1,2,x\n3,4,?\n"), ["a", "b"])  # c ignored
  np.testing.assert_array_equal(x, [[2, 1], [4, 3]])


def test_read_features_label_also_a_feature(tmp_path):
  path = write(tmp_path, "a,y\n1,2\n2,abc\n")
  with pytest.raises(DataError, match=at(3, "y", 2) + ": 'abc' is not a number"):
    read_features(path, ["a", "y"], label="y", class_names=["2", "abc"])
  x, y = read_features(write(tmp_path, "a,y\n1,2\n2,3\n"), ["y"], label="y", class_names="23")
  assert x[:, 0].tolist() == [2, 3] and y.tolist() == [0, 1]


@pytest.mark.parametrize(
    "kwargs, error",
    [
      ({"feature_names": []}, ValueError),
      ({"feature_names": ["a", "a"]}, ValueError),
      ({"feature_names": "a"}, TypeError),
      ({"feature_names": ["a"], "label": "kind"}, ValueError),
      ({"feature_names": ["a"], "label": 2, "class_names": ["x"]}, TypeError),
    ],
)
def test_read_features_argument_errors(tmp_path, kwargs, error):
  with pytest.raises(error):
    read_features(write(tmp_path, TOY), **kwargs)


# ---------------------------------------------------------------------------
# load_dataset
# ---------------------------------------------------------------------------


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
  path = write(tmp_path, TOY, name)
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
