"""Reading CSV files: load_csv and read_features, every error naming file, line and column
(``_datasets/_csv.py``)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from softmax_jax.train._datasets import (
    DataError,
    load_csv,
    read_features,
)

from _util import IRIS_CLASSES, write_data_file


def at(line: int, column: str | None = None, position: int | None = None) -> str:
  """Regex for ``data.csv, line N[, column 'name' (k)]`` in an error message."""
  s = rf"data\.csv, line {line}\b"
  if column is not None:
    s += re.escape(f", column {column!r} ({position})")
  return s


# load_csv: happy paths


TOY = "a,b,kind\n1,2,dog\n3,4,cat\n5,6,dog\n"


@pytest.mark.parametrize("label", ["kind", 2, -1])
def test_csv_label_by_name_or_index(tmp_path, label):
  ds = load_csv(write_data_file(tmp_path, TOY), label=label)
  assert ds.name == "data"
  assert ds.feature_names == ("a", "b")
  assert ds.class_names == ("cat", "dog")
  assert ds.y.tolist() == [1, 0, 1]
  np.testing.assert_array_equal(ds.x, [[1, 2], [3, 4], [5, 6]])


@pytest.mark.parametrize("label", ["a", 0, -3])
def test_csv_label_first_column(tmp_path, label):
  ds = load_csv(write_data_file(tmp_path, "a,b,c\nx,1,2\ny,3,4\n"), label=label, name="toy")
  assert ds.name == "toy" and ds.feature_names == ("b", "c") and ds.class_names == ("x", "y")


def test_csv_integer_labels_sorted_numerically(tmp_path):
  ds = load_csv(write_data_file(tmp_path, "f,y\n1,10\n2,2\n3,-1\n4,2.0\n5,+10\n"))
  assert ds.class_names == ("-1", "2", "10")
  assert ds.y.tolist() == [2, 1, 0, 1, 2]


def test_csv_mixed_labels_are_strings(tmp_path):
  ds = load_csv(write_data_file(tmp_path, "f,y\n1,10\n2,2\n3,other\n"))
  assert ds.class_names == ("10", "2", "other")
  assert ds.y.tolist() == [0, 1, 2]


def test_csv_whitespace_blank_lines_crlf_bom_gzip(tmp_path):
  text = "\ufeff a , b ,kind \r\n\r\n 1 , 2.5e0, dog\r\n   \r\n3,4,cat\r\n\r\n"
  for name in ("data.csv", "data.csv.gz"):
    ds = load_csv(write_data_file(tmp_path, text, name))
    assert ds.name == "data"
    assert ds.feature_names == ("a", "b")
    np.testing.assert_array_equal(ds.x, [[1, 2.5], [3, 4]])
    assert ds.y.tolist() == [1, 0]


def test_csv_quoted_cells(tmp_path):
  ds = load_csv(write_data_file(tmp_path, 'a,"b, c",kind\n1,"2",\'x\'\n3,4,"y z"\n'))
  assert ds.feature_names == ("a", "b, c") and ds.class_names == ("'x'", "y z")


# load_csv: errors, each naming file, line and column


@pytest.mark.parametrize("cell", ["", "NA", "NaN", "nan", "?"])
def test_csv_missing_value(tmp_path, cell):
  text = f"a,b,kind\n1,2,x\n\n3,{cell},y\n"
  with pytest.raises(DataError, match=at(4, "b", 2) + ": missing value"):
    load_csv(write_data_file(tmp_path, text))


def test_csv_not_a_number(tmp_path):
  text = "a,b,c,petal_width,kind\n" + "1,2,3,4,x\n" * 5 + "1,2,3,abc,y\n"
  with pytest.raises(DataError, match=at(7, "petal_width", 4) + ": 'abc' is not a number"):
    load_csv(write_data_file(tmp_path, text))


@pytest.mark.parametrize("cell", ["inf", "-inf", "Infinity", "1e400"])
def test_csv_not_finite(tmp_path, cell):
  with pytest.raises(DataError, match=at(3, "a", 1) + ": .* is not a finite number"):
    load_csv(write_data_file(tmp_path, f"a,b,kind\n1,2,x\n{cell},2,y\n"))


def test_csv_reports_first_bad_cell_in_file_order(tmp_path):
  text = "a,b,kind\n1,2,x\n1,inf,y\nabc,2,x\n1,2\n"
  with pytest.raises(DataError, match=at(3, "b", 2) + ": 'inf' is not a finite"):
    load_csv(write_data_file(tmp_path, text))
  text = "a,b,kind\n1,2,x\n?,2,\n"
  with pytest.raises(DataError, match=at(3, "a", 1) + ": missing value"):
    load_csv(write_data_file(tmp_path, text))


@pytest.mark.parametrize("row, found", [("1,2", 2), ("1,2,x,4", 4), (",", 2)])
def test_csv_wrong_cell_count(tmp_path, row, found):
  with pytest.raises(DataError, match=at(3) + f": expected 3 cells .* found {found}"):
    load_csv(write_data_file(tmp_path, f"a,b,kind\n1,2,x\n{row}\n"))


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_csv_empty_file(tmp_path, text):
  with pytest.raises(DataError, match=r"data\.csv: the file is empty"):
    load_csv(write_data_file(tmp_path, text))


def test_csv_header_without_rows(tmp_path):
  with pytest.raises(DataError, match=at(2) + ": the header is not followed by any data rows"):
    load_csv(write_data_file(tmp_path, "\na,b,kind\n\n"))


def test_csv_duplicate_column(tmp_path):
  with pytest.raises(DataError, match=at(1, "a", 3) + ": duplicate column name .*column 1"):
    load_csv(write_data_file(tmp_path, "a,b,a,kind\n1,2,3,x\n"))


def test_csv_empty_column_name(tmp_path):
  with pytest.raises(DataError, match=at(1) + ", column 2: empty column name"):
    load_csv(write_data_file(tmp_path, "a,,kind\n1,2,x\n"))


@pytest.mark.parametrize("labels, found", [("x,x", "'x'"), ("3,3.0", "'3'")])
def test_csv_one_class(tmp_path, labels, found):
  a, b = labels.split(",")
  with pytest.raises(DataError, match=rf"data\.csv: .*'kind' \(3\) has only one class, {found}"):
    load_csv(write_data_file(tmp_path, f"a,b,kind\n1,2,{a}\n3,4,{b}\n"))


def test_csv_no_feature_column(tmp_path):
  with pytest.raises(DataError, match=at(1) + ": no feature columns.*'kind' \\(1\\)"):
    load_csv(write_data_file(tmp_path, "kind\nx\ny\n"))


@pytest.mark.parametrize("cell", ["", "NA", "?"])
def test_csv_missing_label(tmp_path, cell):
  with pytest.raises(DataError, match=at(4, "kind", 3) + ": missing label"):
    load_csv(write_data_file(tmp_path, f"a,b,kind\n1,2,x\n1,2,y\n1,2,{cell}\n"))


def test_csv_non_integer_numeric_label(tmp_path):
  with pytest.raises(DataError, match=at(3, "kind", 3) + ": label '2.5' is a number but not an"):
    load_csv(write_data_file(tmp_path, "a,b,kind\n1,2,1\n1,2,2.5\n"))


@pytest.mark.parametrize("label, shown", [("species", "'species'"), (3, "4"),
                                          (-4, r"-4 \(counting from the end\)")])
def test_csv_unknown_label_column(tmp_path, label, shown):
  """Messages number columns from 1: index 3 is the fourth column."""
  pattern = at(1) + rf": there is no label column {shown} .*'a' \(1\), 'b' \(2\), 'kind' \(3\)"
  with pytest.raises(DataError, match=pattern):
    load_csv(write_data_file(tmp_path, TOY), label=label)


def test_csv_without_a_header_is_refused(tmp_path):
  with pytest.raises(DataError, match=at(1) + r": the first line is data, not a header"):
    load_csv(write_data_file(tmp_path, "1,2,0\n3,4,1\n5,6,0\n"))


def test_csv_label_wrong_type(tmp_path):
  with pytest.raises(TypeError, match="label"):
    load_csv(write_data_file(tmp_path, TOY), label=True)


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


# read_features


NEW = "id,petal_width,kind,sepal_length,note\n7,0.2,setosa,5.1,a\n8,1.8,virginica,5.9,b\n"


def test_read_features_reordered_and_extra_columns(tmp_path):
  x, y = read_features(write_data_file(tmp_path, NEW), ["sepal_length", "petal_width"])
  assert y is None and x.dtype == np.float64
  np.testing.assert_array_equal(x, [[5.1, 0.2], [5.9, 1.8]])


def test_read_features_with_labels(tmp_path):
  path = write_data_file(tmp_path, NEW)
  x, y = read_features(path, ["petal_width"], label="kind", class_names=IRIS_CLASSES)
  assert y.dtype == np.int32 and y.tolist() == [0, 2]
  _, y = read_features(path, ["petal_width"], label="species", class_names=IRIS_CLASSES)
  assert y is None  # label column absent from the file


def test_read_features_integer_classes(tmp_path):
  path = write_data_file(tmp_path, "f,digit\n1,3\n2,3.0\n3,0\n")
  _, y = read_features(path, ["f"], label="digit", class_names=[str(d) for d in range(10)])
  assert y.tolist() == [3, 3, 0]


def test_read_features_missing_columns(tmp_path):
  pattern = at(1) + r": the header does not name the feature column\(s\) 'petal_length', 'x9'"
  with pytest.raises(DataError, match=pattern):
    read_features(write_data_file(tmp_path, NEW), ["petal_length", "petal_width", "x9"])


def test_read_features_no_header(tmp_path):
  with pytest.raises(DataError, match=at(1) + r": .*'a', 'b'.*header row"):
    read_features(write_data_file(tmp_path, "1,2\n3,4\n"), ["a", "b"])


def test_read_features_unknown_class(tmp_path):
  pattern = at(3, "kind", 3) + r": unknown class 'virginica'; the known classes are 'setosa'"
  with pytest.raises(DataError, match=pattern):
    read_features(write_data_file(tmp_path, NEW), ["petal_width"], label="kind",
                  class_names=["setosa", "x"])


def test_read_features_bad_cells_checked(tmp_path):
  text = "b,a,c\n1,2,x\n1,abc,2\n"
  with pytest.raises(DataError, match=at(3, "a", 2) + ": 'abc' is not a number"):
    read_features(write_data_file(tmp_path, text), ["a", "b"])
  x, _ = read_features(write_data_file(tmp_path, "b,a,c\n1,2,x\n3,4,?\n"), ["a", "b"])  # c ignored
  np.testing.assert_array_equal(x, [[2, 1], [4, 3]])


def test_read_features_label_also_a_feature(tmp_path):
  path = write_data_file(tmp_path, "a,y\n1,2\n2,abc\n")
  with pytest.raises(DataError, match=at(3, "y", 2) + ": 'abc' is not a number"):
    read_features(path, ["a", "y"], label="y", class_names=["2", "abc"])
  x, y = read_features(write_data_file(tmp_path, "a,y\n1,2\n2,3\n"), ["y"], label="y",
                       class_names="23")
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
    read_features(write_data_file(tmp_path, TOY), **kwargs)
