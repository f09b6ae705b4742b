"""Run directories shared by the trainer's tests (each trained once per session).

They are trained as users train by default, with x64 off (session fixtures are set
up before a test's own ``x64`` marker takes effect); the float64 run enables it
itself, inside ``jax.enable_x64(True)``.
"""

import jax
import pytest

from softmax_jax.train import DataConfig, TrainConfig, train_run

CFG = TrainConfig(epochs=12, batch_size=16, hidden=3, learning_rate=0.05)
DATA = DataConfig(dataset="iris")


@pytest.fixture(scope="session")
def run_config():
  """``(TrainConfig, DataConfig)`` of :func:`full_run`."""
  return CFG, DATA


@pytest.fixture(scope="session")
def full_run(tmp_path_factory):
  """``(directory, metrics)`` of a finished 12-epoch iris run, checkpoints every 5 epochs."""
  out = tmp_path_factory.mktemp("runs") / "full"
  metrics = train_run(CFG, DATA, out, checkpoint_every=5, plots=False)
  return out, metrics


@pytest.fixture(scope="session")
def float64_run(tmp_path_factory):
  """``(directory, metrics)`` of a float64 run on blobs (L-BFGS, 5 epochs)."""
  out = tmp_path_factory.mktemp("runs") / "float64"
  cfg = TrainConfig(epochs=5, dtype="float64", optimizer="lbfgs", batch_size=None)
  data = DataConfig(dataset="blobs", n_samples=300, n_features=3, n_classes=4)
  with jax.enable_x64(True):
    metrics = train_run(cfg, data, out, plots=False)
  return out, metrics
