"""``softmax-jax predict`` end to end, and a float64 run through both commands."""

import shutil

import jax
import pytest

from softmax_jax.cli import main
from softmax_jax.train._datasets._builtin import DATA_DIR


@pytest.fixture(scope="module")
def iris_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("cli") / "iris"
  assert main(["train", "--out", str(out), "--epochs", "40", "--lr", "0.05", "--quiet",
               "--no-plots"]) == 0
  return out


def _code(argv) -> int:
  try:
    return main(argv)
  except SystemExit as e:
    return e.code


def _one_line_error(capsys) -> str:
  err = capsys.readouterr().err
  assert "Traceback" not in err and err.count("\n") == 1, err
  return err


def test_predict(iris_run, tmp_path, capsys):
  out = tmp_path / "p.csv"
  assert main(["predict", "--run", str(iris_run), str(DATA_DIR / "iris.csv"),
               "--out", str(out)]) == 0
  printed = capsys.readouterr().out
  assert f"150 predictions written to {out}, accuracy 0.9" in printed
  assert len(out.read_text().splitlines()) == 151


def test_damaged_or_missing_runs_are_one_line_naming_the_file(iris_run, tmp_path, capsys):
  run = tmp_path / "r"
  shutil.copytree(iris_run, run)
  (run / "model.json").write_text("[]")
  assert _code(["predict", "--run", str(run), str(DATA_DIR / "iris.csv")]) == 2
  assert f"{run / 'model.json'} was changed after the run wrote it" in _one_line_error(capsys)
  assert _code(["predict", "--run", str(tmp_path / "none"), str(DATA_DIR / "iris.csv")]) == 2
  assert "no such run directory" in _one_line_error(capsys)
  assert _code(["predict", "--run", str(iris_run), str(tmp_path / "none.csv")]) == 2
  assert "none.csv" in _one_line_error(capsys)


def test_a_float64_run_leaves_x64_off(tmp_path, capsys):
  run = tmp_path / "f64"
  assert main(["train", "--dtype", "float64", "--epochs", "3", "--batch-size", "full",
               "--quiet", "--no-plots", "--out", str(run)]) == 0
  assert main(["predict", "--run", str(run), str(DATA_DIR / "iris.csv")]) == 0
  assert "150 predictions written" in capsys.readouterr().out
  assert not jax.config.jax_enable_x64  # both commands used a float64 context only
