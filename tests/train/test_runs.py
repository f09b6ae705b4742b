"""Run directories: outputs, resumable checkpoints (orbax) and predictions."""

import json
import shutil

import jax
import numpy as np
import pytest

from softmax_jax.train import TrainConfig, _rundir
from softmax_jax.train._checkpoint import CheckpointError
from softmax_jax.train._datasets import DataError
from softmax_jax.train._outputs import save_params
from softmax_jax.train._predict import load_params, predict_run
from softmax_jax.train._rundir import RunError
from softmax_jax.train._runs import DataConfig, Interrupted, train_run

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
  ckpts = sorted(int(p.name) for p in (out / "checkpoints").iterdir())
  # The last epoch's, and at most one before it (kept: 2), from an epoch due for one; which
  # one depends on whether the write at 5 had finished by epoch 10.
  assert ckpts[-1] == 12 and len(ckpts) <= 2 and all(e % 5 == 0 for e in ckpts[:-1]), ckpts
  manifest = json.loads((out / "manifest.json").read_text())
  assert manifest["complete"] and manifest["version"]
  assert set(manifest["files"]) == {"config.json", "model.json", "params.npz", "metrics.json",
                                    "history.csv"}
  assert manifest["files"]["params.npz"] == _rundir.sha256(out / "params.npz")
  assert not [p.name for p in out.iterdir() if p.name.startswith(".tmp-")]  # renamed into place


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
  with pytest.raises(CheckpointError, match="data_sha256"):
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


@pytest.mark.x64
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
  with pytest.raises(ValueError, match="has done 12 epochs already; --epochs 5"):
    train_run(TrainConfig(**{**CFG.to_dict(), "epochs": 5}), DATA, out, resume=True,
              plots=False)
  assert (out / "config.json").read_text() == before


@pytest.mark.parametrize("handler", ["default", "ignore"])
def test_ctrl_c_waits_for_the_checkpoint_write(handler):
  import contextlib
  import os
  import signal

  from softmax_jax.train._checkpoint import _no_interrupt

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


IRIS_ROW = ("sepal_length,sepal_width,petal_length,petal_width,species\n"
            "5.1,3.5,1.4,0.2,setosa\n")


def _edit_json(path, change):
  obj = json.loads(path.read_text())
  change(obj)
  path.write_text(json.dumps(obj))


@pytest.mark.parametrize("tamper", ["class_names", "standardizer", "dtype", "nan_params",
                                    "no_manifest", "bad_json", "not_npz"])
def test_predict_refuses_a_tampered_run(full_run, tmp_path, tamper):
  out = tmp_path / "run"
  shutil.copytree(full_run[0], out)
  src = tmp_path / "new.csv"
  src.write_text(IRIS_ROW)
  if tamper == "class_names":
    _edit_json(out / "model.json", lambda m: m["class_names"].reverse())
  elif tamper == "standardizer":
    _edit_json(out / "model.json", lambda m: m["standardizer"]["mean"].__setitem__(0, 9.0))
  elif tamper == "dtype":
    _edit_json(out / "model.json", lambda m: m.__setitem__("dtype", "float64"))
  elif tamper == "nan_params":
    params = load_params(out / "params.npz")
    params["W"][0, 0] = np.nan
    save_params(params, out / "params.npz")
  elif tamper == "no_manifest":
    (out / "manifest.json").unlink()
  elif tamper == "bad_json":
    (out / "config.json").write_text("{not json")
  else:
    (out / "params.npz").write_bytes(b"junk")
  name = {"no_manifest": "manifest.json", "bad_json": "config.json", "nan_params": "params.npz",
          "not_npz": "params.npz"}.get(tamper, "model.json")
  with pytest.raises(RunError, match=rf"{out / name} (was changed|is missing)"):
    predict_run(out, src)
  if tamper in ("nan_params", "bad_json", "not_npz", "class_names"):  # without the manifest too
    _rundir.write_manifest(out, ["config.json", "model.json", "params.npz"], complete=True)
    what = {"nan_params": "not all finite", "bad_json": "line 1, column 2: not valid JSON",
            "not_npz": "not a readable parameter file", "class_names": None}[tamper]
    if what is None:  # consistent but reversed: only the manifest can tell
      return
    with pytest.raises(RunError, match=rf"{out / name}.*{what}"):
      predict_run(out, src)


def test_predict_refuses_an_interrupted_run_and_an_overflowing_input(full_run, tmp_path):
  out = tmp_path / "run"
  with pytest.raises(Interrupted):
    train_run(CFG, DATA, out, checkpoint_every=5, plots=False, stop_after=3)
  src = tmp_path / "new.csv"
  src.write_text(IRIS_ROW)
  with pytest.raises(RunError, match="did not finish.*--resume"):
    predict_run(out, src)
  src.write_text(IRIS_ROW + "1e300,3.5,1.4,0.2,setosa\n")
  with pytest.raises(DataError, match=r"data row 2, column 'sepal_length': 1e\+300 overflows "
                                      "float32"):
    predict_run(full_run[0], src)


def test_resume_refuses_an_edited_run_and_history(full_run, tmp_path):
  out = tmp_path / "run"
  shutil.copytree(full_run[0], out)
  cfg = TrainConfig(**{**CFG.to_dict(), "epochs": 14})
  _edit_json(out / "config.json", lambda c: c["train"].__setitem__("l2", 0.5))
  with pytest.raises(RunError, match="config.json was changed"):
    train_run(cfg, DATA, out, resume=True, plots=False)
  shutil.rmtree(out)
  shutil.copytree(full_run[0], out)
  meta = out / "checkpoints" / "12" / "meta" / "metadata"
  _edit_json(meta, lambda m: m["history"][3].__setitem__("train_loss", 0.125))
  with pytest.raises(CheckpointError, match="history does not match"):
    train_run(cfg, DATA, out, resume=True, plots=False)


def test_overwrite_clears_the_previous_run(full_run, tmp_path):
  out = tmp_path / "run"
  shutil.copytree(full_run[0], out)
  (out / "curves.png").write_bytes(b"old plot")
  (out / "notes.txt").write_text("mine")
  short = TrainConfig(**{**CFG.to_dict(), "epochs": 5})
  train_run(short, DATA, out, checkpoint_every=5, plots=False, overwrite=True)
  assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["5"]
  assert not (out / "curves.png").exists() and (out / "notes.txt").read_text() == "mine"
  with pytest.raises(ValueError, match="has done 5 epochs already; --epochs 4"):
    train_run(TrainConfig(**{**CFG.to_dict(), "epochs": 4}), DATA, out, resume=True,
              plots=False)


def test_a_second_writer_is_refused_and_a_stale_lock_taken_over(tmp_path):
  import os

  out = tmp_path / "run"
  cfg = TrainConfig(epochs=2, batch_size=None)
  with _rundir.RunLock(out):
    with pytest.raises(RunError, match=rf"in use by another run \(pid {os.getpid()}"):
      train_run(cfg, DATA, out, plots=False)
  (out / ".lock").write_text("999999\n")  # left by a process that died: no flock held
  assert train_run(cfg, DATA, out, plots=False)["epochs"] == 2


def test_too_small_a_data_set_is_refused_and_metrics_are_strict_json(tmp_path):
  tiny = DataConfig(dataset="blobs", n_samples=6, n_classes=3)
  with pytest.raises(DataError, match="6 samples in 3 classes are too few for the split: the "
                                      r"val part \(--val-fraction 0.15\) would be empty"):
    train_run(TrainConfig(epochs=1), tiny, tmp_path / "t", plots=False)
  assert not (tmp_path / "t").exists()
  data = DataConfig(dataset="blobs", n_samples=60, val_fraction=0)
  metrics = train_run(TrainConfig(epochs=2), data, tmp_path / "v", plots=False)
  text = (tmp_path / "v" / "metrics.json").read_text()
  assert json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in metrics.json"))
  assert metrics["val"] == {"n": 0, "accuracy": None, "log_loss": None}


def test_a_default_run_compiles_few_programs(tmp_path):
  """The default iris run (no plots) compiles: the initial state, the epoch, and one
  scoring program per split; op-by-op dispatch would add dozens.  An upper bound,
  as programs other tests compiled already are not compiled again."""
  from jax import monitoring

  compiles = []

  def listen(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(duration)

  monitoring.register_event_duration_secs_listener(listen)
  try:
    train_run(TrainConfig(epochs=3), DATA, tmp_path / "run", plots=False)
  finally:
    monitoring.unregister_event_duration_listener(listen)
  assert len(compiles) <= 5, len(compiles)
