"""Reading comma-separated files into a ``Dataset``: ``load_csv`` and ``read_features``.

Bad input never becomes silently wrong data: every problem in a file raises
``DataError`` (a ``ValueError``) naming the file, the 1-based line and the
column, e.g. ``data.csv, line 7, column 'petal_width' (4): 'abc' is not a
number``.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import math
import numbers
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from softmax_jax.train._datasets._dataset import DataError, Dataset

__all__ = ["label_name", "load_csv", "read_features"]

_MISSING = frozenset({"", "na", "n/a", "nan", "?", "null", "none"})


@dataclasses.dataclass
class _Table:
  """A parsed CSV file: the header and the non-blank rows with their 1-based line numbers."""

  file: str
  header: list[str]
  header_line: int
  rows: list[tuple[int, list[str]]]

  def where(self, line: int, col: int | None = None) -> str:
    """``'file, line N, column 'name' (k)'`` for error messages."""
    s = f"{self.file}, line {line}"
    if col is not None:
      s += f", column {self.header[col]!r} ({col + 1})"
    return s


def _columns_list(header: list[str], limit: int = 20) -> str:
  names = [f"{h!r} ({i + 1})" for i, h in enumerate(header[:limit])]
  if len(header) > limit:
    names.append(f"... ({len(header) - limit} more)")
  return ", ".join(names)


def _open_text(path: Path):
  if path.name.lower().endswith(".gz"):
    return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
  return open(path, encoding="utf-8-sig", newline="")


def _read_table(path) -> _Table:
  """Reads a CSV file (gzip-compressed if the name ends in ``.gz``) into a ``_Table``."""
  file = os.fspath(path)
  p = Path(file)
  if not p.exists():
    raise DataError(f"{file}: no such file.")
  if p.is_dir():
    raise DataError(f"{file}: is a directory, not a CSV file.")
  header: list[str] | None = None
  header_line = 0
  rows: list[tuple[int, list[str]]] = []
  line = 0
  try:
    with _open_text(p) as f:
      reader = csv.reader(f)
      for cells in reader:
        start, line = line + 1, reader.line_num
        cells = [c.strip() for c in cells]
        if not cells or (len(cells) == 1 and not cells[0]):
          continue  # blank line
        if header is None:
          header, header_line = cells, start
        else:
          rows.append((start, cells))
  except csv.Error as e:
    raise DataError(f"{file}, line {line + 1}: cannot parse CSV ({e}).") from e
  except UnicodeDecodeError as e:
    raise DataError(f"{file}: not UTF-8 text ({e.reason} at byte {e.start}).") from e
  except (gzip.BadGzipFile, EOFError, zlib.error) as e:
    raise DataError(f"{file}: not a valid gzip file ({e}).") from e
  except OSError as e:
    raise DataError(f"{file}: cannot read the file ({e}).") from e

  if header is None:
    raise DataError(f"{file}: the file is empty (no header line).")
  seen: dict[str, int] = {}
  for i, h in enumerate(header):
    if not h:
      raise DataError(f"{file}, line {header_line}, column {i + 1}: empty column name in header.")
    if h in seen:
      raise DataError(
          f"{file}, line {header_line}, column {h!r} ({i + 1}): duplicate column name "
          f"(also column {seen[h] + 1})."
      )
    seen[h] = i
  if not rows:
    raise DataError(f"{file}, line {header_line}: the header is not followed by any data rows.")
  return _Table(file, header, header_line, rows)


def _bad_number(table: _Table, line: int, col: int, cell: str) -> DataError:
  """The error for a feature cell that is missing, not a number, or not finite."""
  where = table.where(line, col)
  if cell.lower() in _MISSING:
    what = "empty cell" if not cell else repr(cell)
    return DataError(f"{where}: missing value ({what}).")
  try:
    float(cell)
  except ValueError:
    return DataError(f"{where}: {cell!r} is not a number.")
  return DataError(f"{where}: {cell!r} is not a finite number.")


def _raise_first_bad(
    table: _Table,
    line: int,
    cells: list[str],
    features: Sequence[int],
    label_col: int | None,
) -> None:
  """Raises the error for the leftmost bad feature or label cell of one row."""
  cols = sorted([*features, *([] if label_col is None else [label_col])])
  for j in dict.fromkeys(cols):
    cell = cells[j]
    if j == label_col:
      if cell.lower() in _MISSING:
        what = "empty cell" if not cell else repr(cell)
        raise DataError(f"{table.where(line, j)}: missing label ({what}).")
      if j not in features:
        continue
    try:
      v = float(cell)
    except ValueError:
      v = math.nan
    if not math.isfinite(v):
      raise _bad_number(table, line, j, cell)
  raise AssertionError(f"{table.where(line)}: row rejected without a bad cell")  # unreachable


def _extract(
    table: _Table, feature_cols: Sequence[int], label_col: int | None
) -> tuple[np.ndarray, list[str]]:
  """Feature values (float64) and raw label cells, checking every row in file order."""
  ncols = len(table.header)
  values: list[list[float]] = []
  labels: list[str] = []
  isfinite = math.isfinite
  for line, cells in table.rows:
    if len(cells) != ncols:
      raise DataError(
          f"{table.where(line)}: expected {ncols} cells as in the header, found {len(cells)}."
      )
    ok = True
    if label_col is not None:
      labels.append(cells[label_col])
      ok = cells[label_col].lower() not in _MISSING
    try:
      row = [float(cells[j]) for j in feature_cols]
      ok = ok and all(map(isfinite, row))
    except ValueError:
      ok = False
    if not ok:
      _raise_first_bad(table, line, cells, feature_cols, label_col)
    values.append(row)
  x = np.array(values, dtype=np.float64).reshape(len(values), len(feature_cols))
  return x, labels


def _as_int(s: str) -> int | None:
  """The integer a label cell spells (``'3'``, ``'+3'``, ``'3.0'``), or None."""
  try:
    return int(s)
  except ValueError:
    pass
  try:
    v = float(s)
  except ValueError:
    return None
  return int(v) if math.isfinite(v) and v.is_integer() else None


def _is_finite_number(s: str) -> bool:
  try:
    return math.isfinite(float(s))
  except ValueError:
    return False


def _classes(
    table: _Table, label_col: int, labels: list[str]
) -> tuple[np.ndarray, tuple[str, ...]]:
  """Class indices and names: integers sorted numerically, otherwise strings sorted."""
  ints = [_as_int(s) for s in labels]
  if all(v is not None for v in ints):
    uniq = sorted(set(ints))
    index = {v: i for i, v in enumerate(uniq)}
    y = np.fromiter((index[v] for v in ints), dtype=np.int32, count=len(ints))
    names = tuple(str(v) for v in uniq)
  else:
    if all(_is_finite_number(s) for s in labels):
      line, s = next((ln, s) for (ln, _), s, v in zip(table.rows, labels, ints, strict=True)
                     if v is None)
      raise DataError(
          f"{table.where(line, label_col)}: label {s!r} is a number but not an integer; "
          "class labels must be integers or names."
      )
    uniq_s = sorted(set(labels))
    index_s = {v: i for i, v in enumerate(uniq_s)}
    y = np.fromiter((index_s[s] for s in labels), dtype=np.int32, count=len(labels))
    names = tuple(uniq_s)
  if len(names) < 2:
    raise DataError(
        f"{table.file}: the label column {table.header[label_col]!r} ({label_col + 1}) has only "
        f"one class, {names[0]!r}; at least two classes are needed."
    )
  return y, names


def _label_index(table: _Table, label) -> int:
  ncols = len(table.header)
  if isinstance(label, numbers.Integral) and not isinstance(label, bool):
    if -ncols <= label < ncols:
      return int(label) % ncols
    # Messages number columns from 1 (as the command line's --label does).
    which = f"{label + 1}" if label >= 0 else f"{label} (counting from the end)"
    raise DataError(
        f"{table.file}, line {table.header_line}: there is no label column {which} "
        f"(the file has {ncols} columns: {_columns_list(table.header)})."
    )
  if isinstance(label, str):
    if label in table.header:
      return table.header.index(label)
    raise DataError(
        f"{table.file}, line {table.header_line}: there is no label column {label!r} "
        f"(the columns are {_columns_list(table.header)})."
    )
  raise TypeError(f"label must be a column index (int) or a column name (str), got {label!r}.")


def label_name(path, label: int | str) -> str:
  """The header name of the label column ``label`` (a name, or a 0-based index) of ``path``."""
  table = _read_table(path)
  return table.header[_label_index(table, label)]


def _default_name(path) -> str:
  name = Path(os.fspath(path)).name
  for suffix in (".gz", ".csv"):
    if name.lower().endswith(suffix):
      name = name[: -len(suffix)]
  return name


def load_csv(path, *, label: int | str = -1, name: str | None = None) -> Dataset:
  """Reads a classification data set from a CSV file with a header row.

  Every column except the label column is a numeric feature.  Cells are stripped
  of surrounding whitespace and blank lines are skipped; a name ending in ``.gz``
  is read as gzip-compressed.  Labels that are all integers become classes sorted
  numerically and are named by their value (``3, 7, 10`` give classes ``'3'``,
  ``'7'``, ``'10'``), any other labels classes sorted as
  strings; ``class_names`` records the mapping.

  Args:
    path: the CSV file.
    label: the label column, by 0-based index (negative counts from the end) or by
      header name.  Defaults to the last column.  Error messages number columns
      from 1, as ``softmax-jax train --label`` does.
    name: the data set name; defaults to the file name without ``.csv``/``.gz``.

  Returns:
    A ``Dataset`` with float64 ``x`` and int32 ``y``.

  Raises:
    DataError: on any problem with the file, naming the file, line and column: a
      missing, non-numeric or non-finite feature value, a missing label, a row with
      the wrong number of cells, an empty file, no data rows, an empty or duplicate
      column name, an unknown label column, no feature column, fewer than two
      classes, a first line of numbers instead of a header, or a path that is not a
      readable file.

  >>> import pathlib, shutil, tempfile
  >>> tmp = pathlib.Path(tempfile.mkdtemp())
  >>> _ = (tmp / "toy.csv").write_text("a,b,kind\\n1,2,dog\\n3,4,cat\\n5,6,dog\\n")
  >>> ds = load_csv(tmp / "toy.csv", label="kind")
  >>> ds.name, ds.x.shape, ds.class_names, ds.y.tolist()
  ('toy', (3, 2), ('cat', 'dog'), [1, 0, 1])
  >>> shutil.rmtree(tmp)
  """
  table = _read_table(path)
  if all(_is_finite_number(h) for h in table.header):
    raise DataError(
        f"{table.file}, line {table.header_line}: the first line is data, not a header (every "
        "cell is a number); add a header row naming the columns."
    )
  label_col = _label_index(table, label)
  feature_cols = [j for j in range(len(table.header)) if j != label_col]
  if not feature_cols:
    raise DataError(
        f"{table.file}, line {table.header_line}: no feature columns; the only column is the "
        f"label {table.header[label_col]!r} ({label_col + 1})."
    )
  x, labels = _extract(table, feature_cols, label_col)
  y, class_names = _classes(table, label_col, labels)
  return Dataset(
      x=x,
      y=y,
      class_names=class_names,
      feature_names=tuple(table.header[j] for j in feature_cols),
      name=_default_name(path) if name is None else name,
  )


def read_features(
    path,
    feature_names: Sequence[str],
    *,
    label: str | None = None,
    class_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
  """Reads the named feature columns of a CSV file, e.g. new data for a trained model.

  The header must name every feature; the columns may come in any order and other
  columns are ignored.  Rows are checked as in ``load_csv``.

  Args:
    path: the CSV file (gzip-compressed if the name ends in ``.gz``).
    feature_names: the columns to read, in the order the model expects them.
    label: optionally, the name of a label column.  If the file has it, its values
      are returned as class indices into ``class_names``.
    class_names: the model's classes; required when ``label`` is given.  A label
      cell matches a class by its text, or by its integer value for integer classes
      (``'3.0'`` is class ``'3'``).

  Returns:
    ``(x, y)``: float64 ``[n, len(feature_names)]`` features and int32 class
    indices, or ``None`` for ``y`` if ``label`` is None or not in the file.

  Raises:
    DataError: a feature name missing from the header (listing every missing name),
      a label that is not one of ``class_names``, or any problem ``load_csv``
      reports.

  >>> from softmax_jax.train._datasets._builtin import DATA_DIR
  >>> x, y = read_features(DATA_DIR / "iris.csv", ["petal_width", "sepal_length"],
  ...                      label="species", class_names=["setosa", "versicolor", "virginica"])
  >>> x[0].tolist(), y[[0, 50, 100]].tolist()
  ([0.2, 5.1], [0, 1, 2])
  """
  if isinstance(feature_names, str):
    raise TypeError("feature_names must be a sequence of column names, not a single string.")
  feature_names = [str(f) for f in feature_names]
  if not feature_names:
    raise ValueError("read_features: feature_names is empty.")
  if len(set(feature_names)) != len(feature_names):
    raise ValueError(f"read_features: feature_names has duplicates: {feature_names}.")
  if label is not None and not isinstance(label, str):
    raise TypeError(f"read_features: label must be a column name (str), got {label!r}.")
  if label is not None and class_names is None:
    raise ValueError("read_features: class_names is required when label is given.")
  table = _read_table(path)
  missing = [f for f in feature_names if f not in table.header]
  if missing:
    raise DataError(
        f"{table.file}, line {table.header_line}: the header does not name the feature column(s) "
        f"{', '.join(map(repr, missing))} (header: {_columns_list(table.header)}); the file "
        "needs a header row naming every feature."
    )
  feature_cols = [table.header.index(f) for f in feature_names]
  label_col = table.header.index(label) if label is not None and label in table.header else None
  x, labels = _extract(table, feature_cols, label_col)
  if label_col is None:
    return x, None
  known = [str(c) for c in class_names]
  by_name = {c: i for i, c in enumerate(known)}
  by_int = {v: i for i, c in enumerate(known) if (v := _as_int(c)) is not None and str(v) == c}
  y = np.empty(len(labels), dtype=np.int32)
  for k, ((line, _), s) in enumerate(zip(table.rows, labels, strict=True)):
    i = by_name.get(s)
    if i is None and (v := _as_int(s)) is not None:
      i = by_int.get(v)
    if i is None:
      raise DataError(
          f"{table.where(line, label_col)}: unknown class {s!r}; the known classes are "
          f"{', '.join(map(repr, known))}."
      )
    y[k] = i
  return x, y

