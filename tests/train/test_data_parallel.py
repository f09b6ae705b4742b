"""Data-parallel training (``softmax_jax.train.fit`` with a mesh) on 8 simulated CPU
devices equals training on one device."""

import jax
import numpy as np
import pytest

from softmax_jax.train import TrainConfig, fit, init_state, make_epoch, make_optimizer
from softmax_jax.train._datasets._builtin import load_iris
from softmax_jax.train._loop import replicate


@pytest.fixture(scope="module")
def data_mesh8():
  """The rows over the 8 simulated CPU devices (``"data"``; tests/conftest.py sets them)."""
  assert jax.device_count() == 8
  return jax.sharding.Mesh(np.array(jax.devices()[:8]), ("data",))


@pytest.fixture(scope="module")
def mesh8():
  """The same devices as a class axis (``"model"``), which fit has no use for."""
  return jax.sharding.Mesh(np.array(jax.devices()[:8]), ("model",))


@pytest.fixture(scope="module")
def iris():
  ds = load_iris()
  return ((ds.x - ds.x.mean(0)) / ds.x.std(0)).astype(np.float32), ds.y


@pytest.mark.parametrize("cfg", [
    TrainConfig(epochs=2, batch_size=32),
    TrainConfig(epochs=3, batch_size=None, optimizer="lbfgs"),  # 150 rows padded to 152
    TrainConfig(epochs=2, batch_size=16, hidden=8, optimizer="momentum"),
])
def test_data_parallel_training_equals_single_device(iris, data_mesh8, cfg):
  x, y = iris
  one = fit(x, y, cfg, val=(x[:40], y[:40]))
  many = fit(x, y, cfg, val=(x[:40], y[:40]), mesh=data_mesh8)
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(many.params), strict=True):
    np.testing.assert_allclose(np.asarray(b), a, rtol=2e-5, atol=2e-6)
  assert many.params["W"].sharding.is_fully_replicated
  np.testing.assert_allclose([r["val_loss"] for r in many.history],
                             [r["val_loss"] for r in one.history], rtol=2e-5)


@pytest.mark.internals
def test_data_parallel_gradients_are_all_reduced(iris, data_mesh8):
  """Reads the compiled epoch: the gradients are all-reduced over the data axis."""
  x, y = iris
  cfg = TrainConfig(epochs=1, batch_size=32)
  opt = make_optimizer("adam", 0.01)
  state = replicate(init_state(cfg, 4, 3, optimizer=opt), data_mesh8)
  args = replicate((x, y.astype(np.int32), x[:0], y[:0].astype(np.int32)), data_mesh8)
  hlo = make_epoch(cfg, opt, mesh=data_mesh8).lower(state, *args).compile().as_text()
  assert "all-reduce" in hlo


def test_data_parallel_errors(iris, data_mesh8, mesh8):
  x, y = iris
  with pytest.raises(ValueError, match="batch_size=30 is not a multiple of the 8 devices"):
    fit(x, y, TrainConfig(batch_size=30), mesh=data_mesh8)
  with pytest.raises(ValueError, match="data_axis='data' is not an axis of the mesh"):
    fit(x, y, TrainConfig(), mesh=mesh8)
