"""``softmax-jax train`` and ``softmax-jax predict`` end to end."""

import json
import os
import subprocess
import sys

import pytest

from softmax_jax.cli import main


@pytest.fixture(scope="module")
def iris_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("cli") / "iris"
  code = main(["train", "--out", str(out), "--epochs", "40", "--lr", "0.05", "--quiet",
               "--checkpoint-every", "15"])
  assert code == 0
  return out


def test_train_writes_a_complete_run(iris_run, capsys):
  for name in ("config.json", "model.json", "params.npz", "metrics.json", "history.csv",
               "curves.png", "confusion_matrix.png", "decision_regions.png"):
    assert (iris_run / name).stat().st_size > 0, name
  metrics = json.loads((iris_run / "metrics.json").read_text())
  assert metrics["epochs"] == 40 and metrics["test"]["accuracy"] >= 0.85
  assert sorted(p.name for p in (iris_run / "checkpoints").iterdir()) == ["30", "40"]


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


def test_predict(iris_run, tmp_path, capsys):
  from softmax_jax._data import _DATA_DIR

  out = tmp_path / "p.csv"
  assert main(["predict", "--run", str(iris_run), str(_DATA_DIR / "iris.csv"),
               "--out", str(out)]) == 0
  printed = capsys.readouterr().out
  assert f"150 predictions written to {out}, accuracy 0.9" in printed
  assert len(out.read_text().splitlines()) == 151


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
  single = tmp_path / "single"
  assert _cli("train", "--epochs", "5", "--quiet", "--no-plots", "--out", str(single),
              cwd=tmp_path).returncode == 0
  a, b = np.load(tmp_path / "mh" / "params.npz"), np.load(single / "params.npz")
  for k in a.files:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)
