"""Data sets for the trainer: the containers, the CSV reader, the built-in sets and the
files shipped with the package (``files/``).  Public as ``softmax_jax.datasets``.
"""

from softmax_jax.train._datasets._builtin import load_dataset as load_dataset
from softmax_jax.train._datasets._builtin import load_digits as load_digits
from softmax_jax.train._datasets._builtin import load_iris as load_iris
from softmax_jax.train._datasets._builtin import make_blobs as make_blobs
from softmax_jax.train._datasets._csv import load_csv as load_csv
from softmax_jax.train._datasets._csv import read_features as read_features
from softmax_jax.train._datasets._dataset import DataError as DataError
from softmax_jax.train._datasets._dataset import Dataset as Dataset
from softmax_jax.train._datasets._dataset import Split as Split
from softmax_jax.train._datasets._dataset import Standardizer as Standardizer
from softmax_jax.train._datasets._dataset import split as split

__all__ = ["DataError", "Dataset", "Split", "Standardizer", "load_csv", "load_dataset",
           "load_digits", "load_iris", "make_blobs", "read_features", "split"]
