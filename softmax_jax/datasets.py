"""Data sets: iris, digits, Gaussian blobs and CSV files (``softmax_jax/train/_datasets/``)."""

from softmax_jax.train._datasets import DataError as DataError
from softmax_jax.train._datasets import Dataset as Dataset
from softmax_jax.train._datasets import Split as Split
from softmax_jax.train._datasets import Standardizer as Standardizer
from softmax_jax.train._datasets import load_csv as load_csv
from softmax_jax.train._datasets import load_dataset as load_dataset
from softmax_jax.train._datasets import load_digits as load_digits
from softmax_jax.train._datasets import load_iris as load_iris
from softmax_jax.train._datasets import make_blobs as make_blobs
from softmax_jax.train._datasets import read_features as read_features
from softmax_jax.train._datasets import split as split

__all__ = ["DataError", "Dataset", "Split", "Standardizer", "load_csv", "load_dataset",
           "load_digits", "load_iris", "make_blobs", "read_features", "split"]
