"""The figures' separate model of iris: the 2-feature fit, to the bit, trained in a thread."""

import time

import jax
import numpy as np
import pytest

from softmax_jax.train import DataConfig, TrainConfig, fit
from softmax_jax.train._figures import SeparateModel
from softmax_jax.train._runs import prepare


@pytest.fixture(scope="module")
def iris_train():
  return prepare(DataConfig()).arrays("train")


def test_the_separate_model_is_the_two_feature_fit(iris_train):
  x, y = iris_train
  cfg = TrainConfig(epochs=4, patience=2)  # patience needs validation data: dropped
  two = SeparateModel(x, y, cfg, 3).params()
  want = fit(x[:, :2], y, TrainConfig(epochs=4), n_classes=3).params
  assert two["W"].shape == (2, 3)
  for a, b in zip(jax.tree.leaves(two), jax.tree.leaves(want), strict=True):
    assert np.array_equal(a, b)


def test_the_thread_trains_with_the_callers_x64_setting(iris_train):
  x, y = iris_train
  cfg = TrainConfig(epochs=2, dtype="float64", batch_size=None)
  with jax.enable_x64(True):
    model = SeparateModel(x, y, cfg, 3)
  assert model.params()["W"].dtype == np.float64
  with pytest.raises(ValueError, match="needs 64-bit JAX"):  # raised in the thread, handed on
    SeparateModel(x, y, cfg, 3).params()


def test_cancel_stops_a_long_training(iris_train):
  x, y = iris_train
  model = SeparateModel(x, y, TrainConfig(epochs=10**7, batch_size=None), 3)
  start = time.perf_counter()
  model.cancel()
  assert time.perf_counter() - start < 60 and not model._thread.is_alive()
