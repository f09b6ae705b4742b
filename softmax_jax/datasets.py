"""Data sets: iris, digits, Gaussian blobs and CSV files (see ``softmax_jax._data``)."""

from ._data import DataError as DataError
from ._data import Dataset as Dataset
from ._data import Split as Split
from ._data import Standardizer as Standardizer
from ._data import load_csv as load_csv
from ._data import load_dataset as load_dataset
from ._data import load_digits as load_digits
from ._data import load_iris as load_iris
from ._data import make_blobs as make_blobs
from ._data import read_features as read_features
from ._data import split as split

__all__ = ["DataError", "Dataset", "Split", "Standardizer", "load_csv", "load_dataset",
           "load_digits", "load_iris", "make_blobs", "read_features", "split"]
