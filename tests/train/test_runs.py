"""train_run: the outputs of a run directory, resuming it to the bit, what it refuses."""

import json
import shutil

import jax
import numpy as np
import pytest

from softmax_jax.train import DataConfig, Interrupted, TrainConfig, _rundir, train_run
from softmax_jax.train._checkpoint import CheckpointError
from softmax_jax.train._datasets import DataError
from softmax_jax.train._predict import load_params
from softmax_jax.train._rundir import RunError


def _params(run):
  return jax.tree.leaves(load_params(run / "params.npz"))


def _same(a, b):
  return all(np.array_equal(p, q) for p, q in zip(_params(a), _params(b), strict=True))


def test_outputs(full_run, run_config):
  out, metrics = full_run
  cfg, _ = run_config
  for name in ("config.json", "model.json", "params.npz", "metrics.json", "history.csv"):
    assert (out / name).exists(), name
  saved = json.loads((out / "metrics.json").read_text())
  assert saved == metrics
  assert metrics["epochs"] == 12 and metrics["backend"] == "cpu"
  assert {"train", "val", "test"} <= set(metrics)
  assert metrics["train"]["n"] + metrics["val"]["n"] + metrics["test"]["n"] == 150
  assert metrics["test"]["accuracy"] > 0.8
  assert metrics["train"]["objective"] > metrics["train"]["log_loss"]  # + the L2 penalty
  assert len((out / "history.csv").read_text().splitlines()) == 1 + 12
  config = json.loads((out / "config.json").read_text())
  assert TrainConfig.from_dict(config["train"]) == cfg
  ckpts = sorted(int(p.name) for p in (out / "checkpoints").iterdir())
  # The last epoch's, and at most one before it (2 are kept), from an epoch due for one;
  # which one depends on whether the write at epoch 5 had finished by epoch 10.
  assert ckpts[-1] == 12 and len(ckpts) <= 2 and all(e % 5 == 0 for e in ckpts[:-1]), ckpts
  manifest = json.loads((out / "manifest.json").read_text())
  assert manifest["complete"] and manifest["version"]
  assert set(manifest["files"]) == {"config.json", "model.json", "params.npz", "metrics.json",
                                    "history.csv"}
  assert manifest["files"]["params.npz"] == _rundir.sha256(out / "params.npz")
  assert not [p.name for p in out.iterdir() if p.name.startswith(".tmp-")]  # renamed into place


@pytest.fixture(scope="module")
def interrupted_run(run_config, tmp_path_factory):
  """The run of ``full_run`` stopped after epoch 7."""
  out = tmp_path_factory.mktemp("runs") / "interrupted"
  with pytest.raises(Interrupted, match="after epoch 7"):
    train_run(*run_config, out, checkpoint_every=5, plots=False, stop_after=7)
  return out


@pytest.mark.parametrize("drop_interrupt_checkpoint", [False, True])
def test_interrupted_run_resumes_bit_identical(full_run, interrupted_run, run_config, tmp_path,
                                               drop_interrupt_checkpoint):
  reference, metrics = full_run
  out = tmp_path / "run"
  shutil.copytree(interrupted_run, out)
  ckpts = sorted(int(p.name) for p in (out / "checkpoints").iterdir())
  assert ckpts == [5, 7]  # the periodic one and the one written on interruption
  if drop_interrupt_checkpoint:
    shutil.rmtree(out / "checkpoints" / "7")  # resume from epoch 5 instead
  resumed = train_run(*run_config, out, checkpoint_every=5, plots=False, resume=True)
  assert _same(out, reference)
  assert (out / "history.csv").read_text() == (reference / "history.csv").read_text()
  for part in ("train", "val", "test"):
    assert resumed[part] == metrics[part]


def test_ctrl_c_in_library_use_checkpoints_the_last_epoch(run_config, tmp_path):
  """A KeyboardInterrupt from Python's own handler (here raised in on_epoch) ends the run as
  an interruption, with a checkpoint of the epoch finished; before any epoch, none."""
  cfg, data = run_config

  def ctrl_c(row):
    if row["epoch"] == 3:
      raise KeyboardInterrupt

  with pytest.raises(Interrupted, match=r"after epoch 3 \(checkpoint written\)"):
    train_run(cfg, data, tmp_path / "a", plots=False, on_epoch=ctrl_c)
  assert sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir()) == ["3"]
  with pytest.raises(Interrupted, match="before the first epoch finished; nothing to resume"):
    train_run(cfg, data, tmp_path / "b", plots=False, should_stop=lambda: True)
  assert not list((tmp_path / "b" / "checkpoints").iterdir())


def test_resume_with_another_config_is_refused(full_run, run_config, tmp_path):
  cfg, data = run_config
  out = tmp_path / "run"
  shutil.copytree(full_run[0], out)
  before = (out / "config.json").read_text()
  other = TrainConfig(**{**cfg.to_dict(), "l2": 0.5})
  with pytest.raises(CheckpointError, match=r"belongs to another run \(l2: checkpoint 0.001, "
                                            r"this run 0.5\)"):
    train_run(other, data, out, resume=True, plots=False)
  with pytest.raises(CheckpointError, match="data_sha256"):
    train_run(cfg, DataConfig(dataset="iris", seed=3), out, resume=True, plots=False)
  with pytest.raises(ValueError, match="has done 12 epochs already; --epochs 5"):
    train_run(TrainConfig(**{**cfg.to_dict(), "epochs": 5}), data, out, resume=True,
              plots=False)
  assert (out / "config.json").read_text() == before  # refused runs write nothing
  assert _same(out, full_run[0])


def test_resume_refuses_an_edited_run_and_history(full_run, run_config, tmp_path):
  cfg, data = run_config
  out = tmp_path / "run"
  shutil.copytree(full_run[0], out)
  cfg = TrainConfig(**{**cfg.to_dict(), "epochs": 14})
  obj = json.loads((out / "config.json").read_text())
  obj["train"]["l2"] = 0.5
  (out / "config.json").write_text(json.dumps(obj))
  with pytest.raises(RunError, match="config.json was changed"):
    train_run(cfg, data, out, resume=True, plots=False)


def test_out_directory_is_not_overwritten(full_run, run_config):
  with pytest.raises(FileExistsError, match="already holds files"):
    train_run(*run_config, full_run[0], plots=False)


def test_overwrite_clears_the_previous_run(full_run, run_config, tmp_path):
  cfg, data = run_config
  out = tmp_path / "run"
  shutil.copytree(full_run[0], out)
  (out / "curves.png").write_bytes(b"old plot")
  (out / "notes.txt").write_text("mine")
  short = TrainConfig(**{**cfg.to_dict(), "epochs": 5})
  train_run(short, data, out, checkpoint_every=5, plots=False, overwrite=True)
  assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["5"]
  assert not (out / "curves.png").exists() and (out / "notes.txt").read_text() == "mine"
  with pytest.raises(ValueError, match="has done 5 epochs already; --epochs 4"):
    train_run(TrainConfig(**{**cfg.to_dict(), "epochs": 4}), data, out, resume=True,
              plots=False)


def test_a_second_writer_is_refused_and_a_stale_lock_taken_over(tmp_path):
  import os

  out = tmp_path / "run"
  cfg = TrainConfig(epochs=2, batch_size=None)
  with _rundir.RunLock(out):
    with pytest.raises(RunError, match=rf"in use by another run \(pid {os.getpid()}"):
      train_run(cfg, DataConfig(), out, plots=False)
  (out / ".lock").write_text("999999\n")  # left by a process that died: no flock held
  assert train_run(cfg, DataConfig(), out, plots=False)["epochs"] == 2


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


def test_a_float64_run(float64_run):
  out, metrics = float64_run
  assert metrics["n_classes"] == 4 and metrics["test"]["accuracy"] > 0.5
  assert load_params(out / "params.npz")["W"].dtype == np.float64
  assert not jax.config.jax_enable_x64  # the run's context is gone


@pytest.mark.internals
@pytest.mark.parametrize("plots,most", [(False, 3), (True, 4)])
def test_a_default_run_compiles_a_few_programs_and_says_how_many(tmp_path, plots, most):
  """The default iris run compiles the initial state, the epoch, one scoring program
  for every split and, with plots, the decision regions' grid; op-by-op dispatch would
  add dozens.  An upper bound, as programs other tests compiled already are not
  compiled again; ``metrics.json`` reports the count JAX's own events give."""
  from jax import monitoring

  compiles = []

  def listen(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(duration)

  monitoring.register_event_duration_secs_listener(listen)
  try:
    metrics = train_run(TrainConfig(epochs=3), DataConfig(), tmp_path / "run", plots=plots)
  finally:
    monitoring.unregister_event_duration_listener(listen)
  assert len(compiles) <= most, len(compiles)
  assert metrics["compilations"]["count"] == len(compiles)
  assert metrics["compilations"]["seconds"] == pytest.approx(sum(compiles), abs=2e-3)
  saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
  assert saved["compilations"] == metrics["compilations"]
