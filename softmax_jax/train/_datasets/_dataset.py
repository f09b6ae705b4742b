"""Containers for training data: ``Dataset``, ``Split``, ``Standardizer`` and ``split``.

Everything here is NumPy; a ``Dataset`` holds ``x`` (``[n, features]`` floats) and
``y`` (``[n]`` int32 class indices).
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

__all__ = ["CHUNK_ROWS", "DataError", "Dataset", "Split", "Standardizer", "split"]

CHUNK_ROWS = 1 << 16  # rows per block where a full-size temporary would be wasteful


class DataError(ValueError):
  """A data file or data set that cannot be used; the message names file, line and column."""


# ---------------------------------------------------------------------------
# Containers
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset:
  """Features and integer class labels of a classification data set.

  Attributes:
    x: ``[n, features]`` floating-point features.
    y: ``[n]`` int32 class indices in ``0 .. n_classes - 1``.
    class_names: name of each class; ``class_names[y[i]]`` is the class of sample ``i``.
    feature_names: name of each column of ``x``.
    name: a short name of the data set.
    citation: where the data come from (empty for generated or user data).

  >>> ds = Dataset(np.zeros((3, 2)), np.array([0, 1, 0]), ("a", "b"), ("u", "v"), "toy")
  >>> ds
  Dataset(name='toy', n_samples=3, n_features=2, n_classes=2)
  >>> ds.subset([0, 2]).y.tolist()
  [0, 0]
  """

  x: np.ndarray
  y: np.ndarray
  class_names: tuple[str, ...]
  feature_names: tuple[str, ...]
  name: str
  citation: str = ""

  def __post_init__(self):
    x = np.asarray(self.x)
    y = np.asarray(self.y)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
      raise ValueError(
          f"Dataset {self.name!r}: x must be a 2-D floating-point array, "
          f"got shape {x.shape} and dtype {x.dtype}."
      )
    if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
      raise ValueError(
          f"Dataset {self.name!r}: y must be a 1-D integer array with one label per row of x "
          f"({x.shape[0]}), got shape {y.shape} and dtype {y.dtype}."
      )
    class_names = tuple(str(c) for c in self.class_names)
    feature_names = tuple(str(f) for f in self.feature_names)
    if len(feature_names) != x.shape[1]:
      raise ValueError(
          f"Dataset {self.name!r}: {len(feature_names)} feature names for {x.shape[1]} columns."
      )
    if y.size and (y.min() < 0 or y.max() >= len(class_names)):
      raise ValueError(
          f"Dataset {self.name!r}: labels must lie in 0..{len(class_names) - 1} "
          f"(one per class name), got {y.min()}..{y.max()}."
      )
    if y.dtype != np.int32:
      y = y.astype(np.int32)
    object.__setattr__(self, "x", x)
    object.__setattr__(self, "y", y)
    object.__setattr__(self, "class_names", class_names)
    object.__setattr__(self, "feature_names", feature_names)

  def __repr__(self) -> str:
    return (
        f"Dataset(name={self.name!r}, n_samples={self.n_samples}, "
        f"n_features={self.n_features}, n_classes={self.n_classes})"
    )

  @property
  def n_samples(self) -> int:
    """Number of rows."""
    return int(self.x.shape[0])

  @property
  def n_features(self) -> int:
    """Number of feature columns."""
    return int(self.x.shape[1])

  @property
  def n_classes(self) -> int:
    """Number of classes (``len(class_names)``; a class may have no rows in a subset)."""
    return len(self.class_names)

  def subset(self, indices) -> Dataset:
    """The rows ``indices`` (integer indices or a boolean mask), with the same names."""
    indices = np.asarray(indices)
    if indices.dtype != bool:
      indices = indices.astype(np.intp, copy=False).reshape(-1)
    return dataclasses.replace(self, x=self.x[indices], y=self.y[indices])


@dataclasses.dataclass(frozen=True)
class Split:
  """A data set split into training, validation and test parts."""

  train: Dataset
  val: Dataset
  test: Dataset


@dataclasses.dataclass(frozen=True, eq=False)
class Standardizer:
  """Per-feature standardisation ``(x - mean) / scale``, fitted on training data only.

  >>> s = Standardizer.fit(np.array([[1.0, 5.0], [3.0, 5.0]]))
  >>> s.mean.tolist(), s.scale.tolist()
  ([2.0, 5.0], [1.0, 1.0])
  >>> s.transform(np.array([[3.0, 7.0]])).tolist()
  [[1.0, 2.0]]
  """

  mean: np.ndarray
  scale: np.ndarray

  def __post_init__(self):
    mean = np.asarray(self.mean, dtype=np.float64)
    scale = np.asarray(self.scale, dtype=np.float64)
    if mean.ndim != 1 or scale.shape != mean.shape:
      raise ValueError(
          f"Standardizer: mean and scale must be 1-D of the same length, "
          f"got shapes {mean.shape} and {scale.shape}."
      )
    if not (np.isfinite(mean).all() and np.isfinite(scale).all() and (scale > 0).all()):
      raise ValueError("Standardizer: mean must be finite and scale finite and positive.")
    object.__setattr__(self, "mean", mean)
    object.__setattr__(self, "scale", scale)

  @classmethod
  def fit(cls, x) -> Standardizer:
    """Mean and standard deviation of each column of ``x`` (``[n, features]``, ``n >= 1``).

    Constant columns (standard deviation 0, such as the always-blank border pixels of
    ``digits``) get scale 1, so they become 0 instead of NaN.  Statistics are computed in
    float64, block by block, without a float64 copy of ``x``.
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0:
      raise ValueError(f"Standardizer.fit: x must be 2-D with at least one row, got {x.shape}.")
    n = x.shape[0]
    total = np.zeros(x.shape[1])
    lo = np.full(x.shape[1], np.inf)
    hi = np.full(x.shape[1], -np.inf)
    for start in range(0, n, CHUNK_ROWS):
      block = x[start:start + CHUNK_ROWS]
      total += block.sum(axis=0, dtype=np.float64)
      lo = np.minimum(lo, block.min(axis=0))
      hi = np.maximum(hi, block.max(axis=0))
    mean = total / n
    squares = np.zeros(x.shape[1])
    for start in range(0, n, CHUNK_ROWS):
      d = x[start:start + CHUNK_ROWS].astype(np.float64) - mean
      squares += np.einsum("ij,ij->j", d, d)
    std = np.sqrt(squares / n)
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
      raise ValueError("Standardizer.fit: x contains NaN or infinite values.")
    constant = (std == 0) | (lo == hi)
    return cls(mean=mean, scale=np.where(constant, 1.0, std))

  def transform(self, x) -> np.ndarray:
    """``(x - mean) / scale`` in ``x``'s floating dtype (integers become float64)."""
    x = np.asarray(x)
    if x.ndim < 1 or x.shape[-1] != self.mean.shape[0]:
      raise ValueError(
          f"Standardizer.transform: x must have {self.mean.shape[0]} features in its last axis, "
          f"got shape {x.shape}."
      )
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)
    out = np.subtract(x, self.mean.astype(dtype), dtype=dtype)
    out /= self.scale.astype(dtype)
    return out

  def to_dict(self) -> dict:
    """The statistics as plain lists, ready for ``json.dumps``."""
    return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

  @classmethod
  def from_dict(cls, d: dict) -> Standardizer:
    """Inverse of ``to_dict``."""
    try:
      return cls(mean=d["mean"], scale=d["scale"])
    except (KeyError, TypeError) as e:
      raise ValueError(
          f"Standardizer.from_dict: expected keys 'mean' and 'scale', got {d!r}."
      ) from e


# ---------------------------------------------------------------------------
# Splitting
# ---------------------------------------------------------------------------


def _fraction(value, name: str) -> float:
  if not isinstance(value, numbers.Real) or isinstance(value, bool):
    raise ValueError(f"split: {name} must be a number, got {value!r}.")
  value = float(value)
  if not (math.isfinite(value) and 0 <= value < 1):
    raise ValueError(f"split: {name} must lie in [0, 1), got {value!r}.")
  return value


def split(
    ds: Dataset, *, val_fraction: float = 0.15, test_fraction: float = 0.2, seed: int = 0
) -> Split:
  """Stratified train / validation / test split, deterministic for a seed.

  Each class is shuffled on its own and gives ``round(fraction * size)`` rows to
  the test and validation sets, but always keeps at least one row for training
  (so every class with at least one row, in particular every class with three or
  more, appears in ``train``; with one or two rows, val and test may lack it).
  Inside each part the rows keep their order in ``ds``.

  Args:
    ds: the data set.
    val_fraction: share of each class for validation, ``>= 0`` (0 gives an empty
      validation set of shape ``(0, n_features)``).
    test_fraction: share of each class for testing, ``>= 0``.
    seed: seed of ``np.random.default_rng``.

  Raises:
    ValueError: a fraction is negative or not finite, or the two sum to 1 or more.

  >>> from softmax_jax.datasets import load_iris
  >>> parts = split(load_iris(), seed=0)
  >>> [p.n_samples for p in (parts.train, parts.val, parts.test)]
  [96, 24, 30]
  >>> np.bincount(parts.test.y).tolist()
  [10, 10, 10]
  """
  val_fraction = _fraction(val_fraction, "val_fraction")
  test_fraction = _fraction(test_fraction, "test_fraction")
  if val_fraction + test_fraction >= 1:
    raise ValueError(
        f"split: val_fraction + test_fraction must be < 1 to leave training data, got "
        f"{val_fraction} + {test_fraction}."
    )
  rng = np.random.default_rng(seed)
  parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
  for c in range(ds.n_classes):
    idx = rng.permutation(np.flatnonzero(ds.y == c))
    n = idx.size
    n_test = math.floor(test_fraction * n + 0.5)
    n_val = math.floor(val_fraction * n + 0.5)
    while n_test + n_val > max(n - 1, 0):
      if n_val >= n_test and n_val > 0:
        n_val -= 1
      else:
        n_test -= 1
    parts["test"].append(idx[:n_test])
    parts["val"].append(idx[n_test:n_test + n_val])
    parts["train"].append(idx[n_test + n_val:])
  empty = np.empty(0, np.intp)
  return Split(**{k: ds.subset(np.sort(np.concatenate([empty, *v]))) for k, v in parts.items()})
