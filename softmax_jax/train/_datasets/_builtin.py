"""The built-in data sets (iris, digits, Gaussian blobs) and :func:`load_dataset`.

Two small classic data sets ship with the package (``iris``, ``digits``; see
``softmax_jax/train/_datasets/files/README.md`` for their sources), ``make_blobs`` draws
Gaussian clusters of any size, and :func:`load_dataset` picks one of them by name or
reads a CSV file.  Everything here is NumPy; a ``Dataset`` holds ``x``
(``[n, features]`` floats) and ``y`` (``[n]`` int32 class indices).  CSV reading is in
``_csv.py``, the containers in ``_dataset.py``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from pathlib import Path

import numpy as np

from softmax_jax.train._datasets._csv import load_csv
from softmax_jax.train._datasets._dataset import CHUNK_ROWS, DataError, Dataset

__all__ = ["DATA_DIR", "load_dataset", "load_digits", "load_iris", "make_blobs"]

DATA_DIR = Path(__file__).resolve().parent / "files"  # the data sets shipped with the package

_IRIS_CITATION = (
    'R. A. Fisher (1936), "The use of multiple measurements in taxonomic problems", '
    "Annals of Eugenics 7(2):179-188; via the UCI Machine Learning Repository, "
    "https://archive.ics.uci.edu/dataset/53/iris (CC BY 4.0)."
)
_DIGITS_CITATION = (
    'E. Alpaydin and C. Kaynak (1998), "Optical Recognition of Handwritten Digits", '
    "UCI Machine Learning Repository, https://archive.ics.uci.edu/dataset/80 (CC BY 4.0); "
    "the 8x8 version of the test set as distributed with scikit-learn "
    "(1797 images, pixel counts 0-16)."
)


def load_iris() -> Dataset:
  """Fisher's iris flowers: 150 samples, 4 measurements (cm), 3 species of 50.

  >>> ds = load_iris()
  >>> ds.x.shape, ds.class_names
  ((150, 4), ('setosa', 'versicolor', 'virginica'))
  """
  ds = load_csv(DATA_DIR / "iris.csv", label="species", name="iris")
  return dataclasses.replace(ds, citation=_IRIS_CITATION)


def load_digits() -> Dataset:
  """Handwritten digits: 1797 images of 8x8 pixel counts (0-16), classes ``'0'``..``'9'``.

  >>> ds = load_digits()
  >>> ds.x.shape, ds.n_classes, ds.class_names[:3]
  ((1797, 64), 10, ('0', '1', '2'))
  """
  ds = load_csv(DATA_DIR / "digits.csv.gz", label="digit", name="digits")
  return dataclasses.replace(ds, citation=_DIGITS_CITATION)


def _positive_int(value, name: str) -> int:
  if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
    raise ValueError(f"make_blobs: {name} must be a positive integer, got {value!r}.")
  return int(value)


def make_blobs(
    n_samples: int = 1000,
    n_features: int = 2,
    n_classes: int = 3,
    *,
    seed: int = 0,
    cluster_std: float = 1.0,
    center_box: float = 5.0,
    dtype=np.float64,
) -> Dataset:
  """Isotropic Gaussian clusters, one per class, with balanced classes.

  Sample ``i`` belongs to class ``i % n_classes`` before the labels are shuffled,
  so class sizes differ by at most one.  Centres are uniform in
  ``[-center_box, center_box]^n_features``; every draw comes from
  ``np.random.default_rng(seed)``.  The features are drawn directly in ``dtype``
  (float32 or float64) without full-size temporaries in another dtype, so
  ``make_blobs(1_000_000, 64, dtype=np.float32)`` needs about 260 MB.

  Args:
    n_samples: number of rows (at least ``n_classes``).
    n_features: number of features.
    n_classes: number of classes (at least 2).
    seed: seed of the random generator.
    cluster_std: standard deviation of each cluster (>= 0).
    center_box: half-width of the box the centres are drawn from (> 0).
    dtype: ``np.float32`` or ``np.float64``.

  Returns:
    A ``Dataset`` named ``'blobs'`` with features ``'x0'``, ``'x1'``, ... and classes
    ``'0'``, ``'1'``, ...

  >>> ds = make_blobs(300, 2, 3, seed=1)
  >>> ds.x.shape, ds.x.dtype, np.bincount(ds.y).tolist()
  ((300, 2), dtype('float64'), [100, 100, 100])
  """
  n_samples = _positive_int(n_samples, "n_samples")
  n_features = _positive_int(n_features, "n_features")
  n_classes = _positive_int(n_classes, "n_classes")
  if n_classes < 2:
    raise ValueError(f"make_blobs: n_classes must be at least 2, got {n_classes}.")
  if n_samples < n_classes:
    raise ValueError(
        f"make_blobs: n_samples ({n_samples}) must be at least n_classes ({n_classes})."
    )
  if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
    raise ValueError(f"make_blobs: seed must be a non-negative integer, got {seed!r}.")
  if not isinstance(cluster_std, numbers.Real) or not math.isfinite(cluster_std) or cluster_std < 0:
    raise ValueError(f"make_blobs: cluster_std must be finite and >= 0, got {cluster_std!r}.")
  if not isinstance(center_box, numbers.Real) or not math.isfinite(center_box) or center_box <= 0:
    raise ValueError(f"make_blobs: center_box must be finite and > 0, got {center_box!r}.")
  try:
    dt = np.dtype(dtype)
  except TypeError as e:
    raise ValueError(f"make_blobs: dtype must be float32 or float64, got {dtype!r}.") from e
  if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
    raise ValueError(f"make_blobs: dtype must be float32 or float64, got {dt}.")

  rng = np.random.default_rng(int(seed))
  centers = rng.uniform(-center_box, center_box, size=(n_classes, n_features)).astype(dt)
  y = (np.arange(n_samples, dtype=np.int64) % n_classes).astype(np.int32)
  rng.shuffle(y)
  x = rng.standard_normal((n_samples, n_features), dtype=dt)
  if cluster_std != 1:
    x *= dt.type(cluster_std)
  for start in range(0, n_samples, CHUNK_ROWS):
    x[start:start + CHUNK_ROWS] += centers[y[start:start + CHUNK_ROWS]]
  return Dataset(
      x=x,
      y=y,
      class_names=tuple(str(c) for c in range(n_classes)),
      feature_names=tuple(f"x{j}" for j in range(n_features)),
      name="blobs",
  )


def _looks_like_path(spec: str) -> bool:
  return (
      "/" in spec or os.sep in spec or (os.altsep is not None and os.altsep in spec)
      or "." in Path(spec).name
  )


def load_dataset(
    spec: str,
    *,
    label: int | str = -1,
    n_samples: int = 1000,
    n_features: int = 2,
    n_classes: int = 3,
    seed: int = 0,
) -> Dataset:
  """A data set by name (``'iris'``, ``'digits'``, ``'blobs'``) or a CSV file path.

  Args:
    spec: ``'iris'``, ``'digits'``, ``'blobs'`` (case-insensitive) or the path of a
      ``.csv`` or ``.csv.gz`` file.
    label: the label column of a CSV file (see ``load_csv``); ignored otherwise.
    n_samples: ``make_blobs`` argument, for ``'blobs'`` only.
    n_features: ``make_blobs`` argument, for ``'blobs'`` only.
    n_classes: ``make_blobs`` argument, for ``'blobs'`` only.
    seed: ``make_blobs`` argument, for ``'blobs'`` only.

  Raises:
    DataError: ``spec`` is none of these (the message lists the choices and says
      when a path does not exist), or the CSV file is bad.

  >>> load_dataset("iris").name, load_dataset("blobs", n_samples=10).x.shape
  ('iris', (10, 2))
  """
  key = os.fspath(spec).strip()
  if key.lower() == "iris":
    return load_iris()
  if key.lower() == "digits":
    return load_digits()
  if key.lower() == "blobs":
    return make_blobs(n_samples, n_features, n_classes, seed=seed)
  choices = "choose 'iris', 'digits', 'blobs' or the path of a .csv or .csv.gz file"
  is_csv = key.lower().endswith((".csv", ".csv.gz"))
  p = Path(key)
  if is_csv and p.is_file():
    return load_csv(p, label=label)
  if p.is_dir():
    raise DataError(f"unknown data set {key!r}: it is a directory, not a file; {choices}.")
  if p.exists():
    raise DataError(f"unknown data set {key!r}: the file is not a .csv or .csv.gz file; {choices}.")
  if is_csv or _looks_like_path(key):
    raise DataError(f"unknown data set {key!r}: the file does not exist; {choices}.")
  raise DataError(f"unknown data set {key!r}; {choices}.")

