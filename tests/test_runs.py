"""Run directories: outputs, resumable checkpoints (orbax) and predictions."""

import json
import shutil

import jax
import numpy as np
import pytest

from softmax_jax._checkpoint import CheckpointError
from softmax_jax._runs import DataConfig, Interrupted, load_params, predict_run, train_run
from softmax_jax.train import TrainConfig

CFG = TrainConfig(epochs=12, batch_size=16, hidden=3, learning_rate=0.05)
DATA = DataConfig(dataset="iris")


def _params(run):
  return jax.tree.leaves(load_params(run / "params.npz"))


def _same(a, b):
  return all(np.array_equal(p, q) for p, q in zip(_params(a), _params(b), strict=True))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("runs") / "full"
  metrics = train_run(CFG, DATA, out, checkpoint_every=5, plots=False)
  return out, metrics


def test_outputs(full_run):
  out, metrics = full_run
  for name in ("config.json", "model.json", "params.npz", "metrics.json", "history.csv"):
    assert (out / name).exists(), name
  saved = json.loads((out / "metrics.json").read_text())
  assert saved == metrics
  assert metrics["epochs"] == 12 and metrics["backend"] == "cpu"
  assert {"train", "val", "test"} <= set(metrics)
  assert metrics["train"]["n"] + metrics["val"]["n"] + metrics["test"]["n"] == 150
  assert metrics["test"]["accuracy"] > 0.8
  assert len((out / "history.csv").read_text().splitlines()) == 1 + 12
  config = json.loads((out / "config.json").read_text())
  assert TrainConfig.from_dict(config["train"]) == CFG
  assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["10", "12"]


@pytest.mark.parametrize("drop_interrupt_checkpoint", [False, True])
def test_interrupted_run_resumes_bit_identical(full_run, tmp_path, drop_interrupt_checkpoint):
  reference, metrics = full_run
  out = tmp_path / "run"
  with pytest.raises(Interrupted, match="after epoch 7"):
    train_run(CFG, DATA, out, checkpoint_every=5, plots=False, stop_after=7)
  ckpts = sorted(int(p.name) for p in (out / "checkpoints").iterdir())
  assert ckpts == [5, 7]  # the periodic one and the one written on interruption
  if drop_interrupt_checkpoint:
    shutil.rmtree(out / "checkpoints" / "7")  # resume from epoch 5 instead
  resumed = train_run(CFG, DATA, out, checkpoint_every=5, plots=False, resume=True)
  assert _same(out, reference)
  assert (out / "history.csv").read_text() == (reference / "history.csv").read_text()
  for part in ("train", "val", "test"):
    assert resumed[part] == metrics[part]


def test_resume_with_another_config_is_refused(full_run, tmp_path):
  out = tmp_path / "run"
  shutil.copytree(full_run[0], out)
  other = TrainConfig(**{**CFG.to_dict(), "l2": 0.5})
  with pytest.raises(CheckpointError, match=r"belongs to another run \(l2: checkpoint 0.001, "
                                            r"this run 0.5\)"):
    train_run(other, DATA, out, resume=True, plots=False)
  with pytest.raises(CheckpointError, match="training_data_sha256"):
    train_run(CFG, DataConfig(dataset="iris", seed=3), out, resume=True, plots=False)
  before = _params(out)
  assert all(np.array_equal(p, q) for p, q in zip(before, _params(full_run[0]), strict=True))


# orbax's background event loop reports a closed loop after a failed read; harmless here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("damage", ["array", "metadata", "empty"])
def test_damaged_checkpoint_is_refused(full_run, tmp_path, damage):
  out = tmp_path / "run"
  shutil.copytree(full_run[0], out)
  latest = out / "checkpoints" / "12"
  if damage == "array":
    for f in (latest / "state").rglob("*"):
      if f.is_file() and f.parent.name == "d":
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
  elif damage == "metadata":
    (latest / "meta" / "metadata").write_text("{not json")
  else:
    shutil.rmtree(out / "checkpoints")
    (out / "checkpoints").mkdir()
  with pytest.raises(CheckpointError, match="damaged|unreadable|no checkpoint|no valid"):
    train_run(CFG, DATA, out, resume=True, plots=False)


def test_out_directory_is_not_overwritten(full_run):
  with pytest.raises(FileExistsError, match="already holds files"):
    train_run(CFG, DATA, full_run[0], plots=False)


def test_predict_run(full_run, tmp_path):
  out, metrics = full_run
  src = tmp_path / "new.csv"
  rows = ["petal_width,extra,sepal_length,petal_length,sepal_width,species",
          "0.2,x,5.1,1.4,3.5,setosa", "1.8,y,6.3,5.6,2.9,virginica"]
  src.write_text("\n".join(rows) + "\n")
  path, summary = predict_run(out, src, tmp_path / "pred.csv")
  lines = path.read_text().splitlines()
  assert lines[0] == "row,predicted,p_setosa,p_versicolor,p_virginica"
  assert lines[1].startswith("1,setosa,") and lines[2].startswith("2,virginica,")
  assert summary == {"n": 2, "accuracy": 1.0}
  probs = [float(v) for v in lines[1].split(",")[2:]]
  assert abs(sum(probs) - 1) < 1e-5


def test_float64_and_blobs_run(tmp_path):
  cfg = TrainConfig(epochs=5, dtype="float64", optimizer="lbfgs", batch_size=None)
  data = DataConfig(dataset="blobs", n_samples=300, n_features=3, n_classes=4)
  metrics = train_run(cfg, data, tmp_path / "b", plots=False)
  assert metrics["n_classes"] == 4 and metrics["test"]["accuracy"] > 0.5
  assert load_params(tmp_path / "b" / "params.npz")["W"].dtype == np.float64


def test_refused_resume_leaves_config_untouched(full_run, tmp_path):
  out = tmp_path / "run"
  shutil.copytree(full_run[0], out)
  before = (out / "config.json").read_text()
  with pytest.raises(CheckpointError):
    train_run(TrainConfig(**{**CFG.to_dict(), "l2": 0.5}), DATA, out, resume=True, plots=False)
  with pytest.raises(ValueError, match="has done 12 epochs already; epochs=5"):
    train_run(TrainConfig(**{**CFG.to_dict(), "epochs": 5}), DATA, out, resume=True,
              plots=False)
  assert (out / "config.json").read_text() == before


@pytest.mark.parametrize("handler", ["default", "ignore"])
def test_ctrl_c_waits_for_the_checkpoint_write(handler):
  import contextlib
  import os
  import signal

  from softmax_jax._checkpoint import _no_interrupt

  before = signal.default_int_handler if handler == "default" else signal.SIG_IGN
  saved = signal.signal(signal.SIGINT, before)
  try:
    finished = False
    expect = pytest.raises(KeyboardInterrupt) if handler == "default" else contextlib.nullcontext()
    with expect:
      with _no_interrupt():
        os.kill(os.getpid(), signal.SIGINT)
        finished = True  # reached: the interrupt is held back until the block ends
    assert finished
    assert signal.getsignal(signal.SIGINT) is before  # an ignored Ctrl-C stays ignored
  finally:
    signal.signal(signal.SIGINT, saved)
