"""``softmax-jax train`` end to end: the run it writes, resuming, every mistake one line.

``predict`` is in test_predict.py, the signals (and a kill) in test_signals.py.
"""

import json
import os
import subprocess
import sys

import pytest

from softmax_jax.cli import main

from _util import cli_exit_code, one_line_error


@pytest.fixture(scope="module")
def iris_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("cli") / "iris"
  code = main(["train", "--out", str(out), "--epochs", "40", "--lr", "0.05", "--quiet",
               "--checkpoint-every", "15", "--no-plots"])
  assert code == 0
  return out


def test_train_writes_a_complete_run(iris_run, capsys):
  for name in ("config.json", "model.json", "params.npz", "metrics.json", "history.csv"):
    assert (iris_run / name).stat().st_size > 0, name
  assert not (iris_run / "curves.png").exists()  # --no-plots
  metrics = json.loads((iris_run / "metrics.json").read_text())
  assert metrics["epochs"] == 40 and metrics["test"]["accuracy"] >= 0.85
  ckpts = sorted(int(p.name) for p in (iris_run / "checkpoints").iterdir())
  assert ckpts[-1] == 40 and len(ckpts) <= 2 and all(e % 15 == 0 for e in ckpts[:-1]), ckpts


def test_resume_extends_a_run_and_refuses_new_settings(iris_run, tmp_path, capsys):
  import shutil

  run = tmp_path / "r"
  shutil.copytree(iris_run, run)
  assert main(["train", "--resume", str(run), "--epochs", "45", "--quiet", "--no-plots"]) == 0
  assert json.loads((run / "metrics.json").read_text())["epochs"] == 45
  assert len((run / "history.csv").read_text().splitlines()) == 46
  assert main(["train", "--resume", str(run), "--lr", "0.5"]) == 2
  assert "drop --lr" in capsys.readouterr().err
  assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
  assert "no run there" in capsys.readouterr().err


def test_bad_csv_names_file_line_and_column(tmp_path, capsys):
  bad = tmp_path / "bad.csv"
  bad.write_text("a,b,label\n1,2,x\n3,oops,y\n")
  assert main(["train", "--dataset", str(bad), "--out", str(tmp_path / "o"), "--quiet"]) == 2
  err = capsys.readouterr().err
  assert "bad.csv, line 3, column 'b' (2): 'oops' is not a number" in err
  assert not (tmp_path / "o").exists()  # nothing trained, nothing written
  missing = tmp_path / "missing.csv"
  missing.write_text("a,b,label\n1,,x\n3,4,y\n")
  assert main(["train", "--dataset", str(missing), "--out", str(tmp_path / "o2")]) == 2
  assert "line 2, column 'b' (2)" in capsys.readouterr().err
  one = tmp_path / "one.csv"
  one.write_text("a,label\n1,x\n2,x\n")
  assert main(["train", "--dataset", str(one), "--out", str(tmp_path / "o3")]) == 2
  assert "class" in capsys.readouterr().err
  assert main(["train", "--dataset", str(bad), "--label", "nope", "--out",
               str(tmp_path / "o4")]) == 2
  assert "nope" in capsys.readouterr().err


def test_existing_out_is_refused(iris_run, capsys):
  assert main(["train", "--out", str(iris_run), "--epochs", "2", "--quiet"]) == 2
  assert "already holds files" in capsys.readouterr().err


def _cli(*args, cwd):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-m", "softmax_jax", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


def test_default_train_from_the_command_line(tmp_path):
  """`softmax-jax train` with no flags: iris, defaults, a run directory under runs/."""
  proc = _cli("train", cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr
  runs = list((tmp_path / "runs").iterdir())
  assert len(runs) == 1 and runs[0].name.startswith("iris-")
  metrics = json.loads((runs[0] / "metrics.json").read_text())
  assert metrics["epochs"] == 200 and metrics["test"]["accuracy"] >= 0.85
  for name in ("curves.png", "confusion_matrix.png", "decision_regions.png"):
    assert (runs[0] / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
  manifest = json.loads((runs[0] / "manifest.json").read_text())
  assert manifest["complete"] and "decision_regions.png" in manifest["files"]
  assert "test" in proc.stdout and "backend cpu" in proc.stdout
  assert "epoch" in proc.stderr  # the progress bar


def test_unavailable_device_is_a_clear_error(tmp_path):
  proc = _cli("train", "--device", "tpu", "--out", "x", cwd=tmp_path)
  assert proc.returncode == 2
  assert "--device tpu: JAX found no such backend" in proc.stderr


def test_option_conflicts(iris_run, capsys):
  assert main(["train", "--resume", str(iris_run), "--overwrite"]) == 2
  assert "drop --overwrite" in capsys.readouterr().err
  assert main(["train", "--optimizer", "lbfgs", "--batch-size", "32", "--out", "x"]) == 2
  assert "--optimizer lbfgs is full batch" in capsys.readouterr().err


def test_csv_run_records_an_absolute_path(tmp_path, monkeypatch, capsys):
  import gzip

  monkeypatch.chdir(tmp_path)
  with gzip.open("pts.csv.gz", "wt") as f:
    f.write("a,b,kind\n" + "".join(f"{i % 7},{i % 3},{'xy'[i % 2]}\n" for i in range(40)))
  assert main(["train", "--dataset", "pts.csv.gz", "--epochs", "3", "--quiet", "--no-plots"]) == 0
  run = next((tmp_path / "runs").iterdir())
  assert run.name.startswith("pts-")
  config = json.loads((run / "config.json").read_text())
  assert config["data"]["dataset"] == str(tmp_path / "pts.csv.gz")


def test_data_parallel_command_line(tmp_path, capsys):
  out = tmp_path / "dp"
  assert main(["train", "--mesh", "data=8", "--epochs", "5", "--quiet", "--no-plots",
               "--out", str(out)]) == 0
  assert "mesh {'data': 8}" in capsys.readouterr().out
  assert json.loads((out / "metrics.json").read_text())["mesh"] == {"data": 8}
  assert main(["train", "--mesh", "model=8", "--out", str(tmp_path / "x")]) == 2
  assert "write it as data=N" in capsys.readouterr().err
  assert main(["train", "--mesh", "data=16", "--out", str(tmp_path / "x")]) == 2
  assert "needs 16 devices but JAX sees 8" in capsys.readouterr().err
  assert main(["train", "--mesh", "data=8", "--batch-size", "30",
               "--out", str(tmp_path / "x")]) == 2
  assert "--batch-size 30 is not a multiple of the 8 devices" in capsys.readouterr().err


def test_two_processes_on_one_machine(tmp_path):
  """Multi-host start-up: two processes join through jax.distributed and train one model."""
  import socket

  import numpy as np

  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
         "XLA_FLAGS": ""}
  common = ["--coordinator", f"localhost:{port}", "--num-processes", "2", "--data-parallel",
            "--epochs", "5", "--quiet", "--no-plots", "--out", str(tmp_path / "mh")]
  procs = [subprocess.Popen([sys.executable, "-m", "softmax_jax", "train", *common,
                             "--process-id", str(i)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = [p.communicate(timeout=240) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs
  assert "mesh {'data': 2}" in outs[0][0] and "run directory" not in outs[1][0]  # process 0 reports
  from softmax_jax.train import DataConfig, TrainConfig, train_run

  single = tmp_path / "single"  # the same run in one process (float32 too: x64 is off)
  train_run(TrainConfig(epochs=5), DataConfig(), single, plots=False)
  a, b = np.load(tmp_path / "mh" / "params.npz"), np.load(single / "params.npz")
  for k in a.files:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)


@pytest.fixture
def toy_csv(tmp_path):
  path = tmp_path / "toy.csv"
  path.write_text("a,b,kind\n" + "".join(f"{i % 7},{i % 3},{'xy'[i % 2]}\n" for i in range(40)))
  return path


@pytest.mark.parametrize("argv, message", [
    (["--checkpoint-every", "0"], "argument --checkpoint-every: must be an integer >= 1, got '0'"),
    (["--batch-size", "0"], "argument --batch-size: must be a positive integer or 'full'"),
    (["--epochs", "0"], "argument --epochs: must be an integer >= 1"),
    (["--lr", "nan"], "argument --lr: must be a finite number >= 0"),
    (["--val-fraction", "1.5"], "argument --val-fraction: must be a finite number in [0, 1)"),
    (["--val-fraction", "0.5", "--test-fraction", "0.5"],
     "--val-fraction 0.5 + --test-fraction 0.5 must be < 1"),
    (["--features", "3"], "--features applies to --dataset blobs only; iris has its own"),
    (["--dataset", "digits", "--classes", "4"], "--classes applies to --dataset blobs only"),
    (["--label", "2"], "--label applies to CSV files only"),
    (["--patience", "3", "--val-fraction", "0"], "--patience (early stopping) needs a validation"),
    (["--dataset", "blobs", "--n-samples", "6", "--classes", "3"],
     "6 samples in 3 classes are too few for the split"),
])
def test_user_errors_are_one_line_naming_the_flag(argv, message, tmp_path, capsys):
  assert cli_exit_code(["train", "--out", str(tmp_path / "o"), "--quiet", *argv]) == 2
  assert message in one_line_error(capsys)
  assert not (tmp_path / "o").exists()


def test_label_is_numbered_from_1_like_its_errors(toy_csv, tmp_path, capsys):
  common = ["train", "--dataset", str(toy_csv), "--quiet", "--no-plots", "--epochs", "1"]
  assert cli_exit_code([*common, "--label", "0", "--out", str(tmp_path / "a")]) == 2
  assert "columns are numbered from 1" in one_line_error(capsys)
  assert cli_exit_code([*common, "--label", "4", "--out", str(tmp_path / "b")]) == 2
  assert "there is no label column 4 (the file has 3 columns: 'a' (1)" in one_line_error(capsys)
  assert cli_exit_code([*common, "--label", "3", "--out", str(tmp_path / "c")]) == 0  # 'kind'
  assert json.loads((tmp_path / "c" / "model.json").read_text())["label_name"] == "kind"
  headless = tmp_path / "headless.csv"
  headless.write_text("1,2,0\n3,4,1\n5,6,0\n")
  assert cli_exit_code([*common[:2], str(headless), "--out", str(tmp_path / "d")]) == 2
  assert "headless.csv, line 1: the first line is data, not a header" in one_line_error(capsys)


def test_unusable_out_directories(iris_run, tmp_path, capsys):
  import os

  from softmax_jax.train._rundir import RunLock

  afile = tmp_path / "afile"
  afile.write_text("x")
  assert cli_exit_code(["train", "--out", str(afile), "--quiet"]) == 2
  assert f"--out {afile} is a file, not a directory" in one_line_error(capsys)
  if os.geteuid() != 0:  # permissions do not bind root: use a read-only file system then
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    target, expect = ro / "run", f"{ro} is not writable"
  else:
    target, expect = "/sys/softmax-jax-run", "cannot write /sys/softmax-jax-run: "
  assert cli_exit_code(["train", "--out", str(target), "--quiet", "--no-plots", "--epochs",
                        "1"]) == 2
  assert expect in one_line_error(capsys)
  held = tmp_path / "held"
  with RunLock(held):
    assert cli_exit_code(["train", "--out", str(held), "--overwrite", "--quiet", "--epochs",
                          "1"]) == 2
  assert f"in use by another run (pid {os.getpid()}" in one_line_error(capsys)


def test_a_damaged_config_names_the_file(iris_run, tmp_path, capsys):
  import shutil

  run = tmp_path / "r"
  shutil.copytree(iris_run, run)
  (run / "config.json").write_text('{"train": {"epochs": 3,}}')
  assert cli_exit_code(["train", "--resume", str(run), "--quiet"]) == 2
  assert f"{run / 'config.json'}, line 1, column 24: not valid JSON" in one_line_error(capsys)


@pytest.mark.internals
def test_missing_train_extra_is_reported_before_any_work(tmp_path, monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
  assert cli_exit_code(["train", "--out", str(tmp_path / "o"), "--quiet"]) == 2
  err = one_line_error(capsys)
  assert "needs matplotlib" in err and "pip install 'softmax_jax[train]'" in err
  assert not (tmp_path / "o").exists()
  monkeypatch.setitem(sys.modules, "orbax.checkpoint", None)
  assert cli_exit_code(["train", "--out", str(tmp_path / "o"), "--quiet", "--no-plots"]) == 2
  assert "needs orbax" in one_line_error(capsys)


@pytest.mark.internals
def test_a_full_disk_is_one_line_naming_the_path(tmp_path, monkeypatch, capsys):
  import errno

  from softmax_jax.train import _rundir

  def full(path, text):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

  monkeypatch.setattr(_rundir, "write_text", full)  # stands in for a full disk
  out = tmp_path / "o"
  assert cli_exit_code(["train", "--out", str(out), "--quiet", "--no-plots", "--epochs", "1"]) == 2
  assert f"cannot write {out / 'config.json'}: No space left on device" in one_line_error(capsys)


def test_huge_training_values_are_refused_naming_the_column(tmp_path, capsys):
  path = tmp_path / "huge.csv"
  path.write_text("a,b,kind\n" + "".join(f"{i},{1e307 * (i % 2 * 2 - 1) * 9},{'xy'[i % 2]}\n"
                                         for i in range(40)))
  assert cli_exit_code(["train", "--dataset", str(path), "--out", str(tmp_path / "o"),
                        "--quiet"]) == 2
  assert "huge.csv, column 'b': values up to 9e+307 are too large" in one_line_error(capsys)
