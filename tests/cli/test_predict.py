"""``softmax-jax predict`` end to end, and a float64 run through both commands."""

import shutil

import jax
import pytest

from softmax_jax.cli import main
from softmax_jax.train._datasets._builtin import DATA_DIR

from _util import cli_exit_code, one_line_error


@pytest.fixture(scope="module")
def iris_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("cli") / "iris"
  assert main(["train", "--out", str(out), "--epochs", "40", "--lr", "0.05", "--quiet",
               "--no-plots"]) == 0
  return out


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
  assert cli_exit_code(["predict", "--run", str(run), str(DATA_DIR / "iris.csv")]) == 2
  assert f"{run / 'model.json'} was changed after the run wrote it" in one_line_error(capsys)
  assert cli_exit_code(["predict", "--run", str(tmp_path / "none"),
                        str(DATA_DIR / "iris.csv")]) == 2
  assert "no such run directory" in one_line_error(capsys)
  assert cli_exit_code(["predict", "--run", str(iris_run), str(tmp_path / "none.csv")]) == 2
  assert "none.csv" in one_line_error(capsys)


def test_a_float64_run_leaves_x64_off(tmp_path, capsys):
  run = tmp_path / "f64"
  assert main(["train", "--dtype", "float64", "--epochs", "3", "--batch-size", "full",
               "--quiet", "--no-plots", "--out", str(run)]) == 0
  assert main(["predict", "--run", str(run), str(DATA_DIR / "iris.csv")]) == 0
  assert "150 predictions written" in capsys.readouterr().out
  assert not jax.config.jax_enable_x64  # both commands used a float64 context only
