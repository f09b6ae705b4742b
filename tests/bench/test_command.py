"""`softmax-jax bench`: a tiny grid runs every operation and writes its files; a wrong or
failing implementation makes it exit 1; bad arguments are refused before any timing.

Speed is measured by `softmax-jax bench`, not here.
"""

import csv
import json

import jax
import pytest

from softmax_jax import _softmax, bench, cli

TINY = ["bench", "--shapes", "64x32", "--dtype", "float32", "--jacobian-shape", "8x8",
        "--product-shape", "2x64", "--linear-shape", "16x8x64", "--repeats", "3"]


def test_tiny_grid_runs_every_op_and_writes_every_output(tmp_path, capsys):
  paths = {k: tmp_path / f"out.{k}" for k in ("json", "csv", "markdown")}
  args = TINY + [f"--{k}={v}" for k, v in paths.items()]
  assert cli.main(args) == 0
  out = capsys.readouterr().out
  assert "copy bandwidth" in out and "softmax_jacobian" in out
  data = json.loads(paths["json"].read_text())
  ops = {r["op"] for r in data["rows"]}
  assert ops == set(bench.OPS)
  assert data["copy_gbps"] > 0
  ours = [r for r in data["rows"] if r["impl"] == "softmax_jax"]
  assert all(r["correct"] and r["median_ms"] > 0 and r["speedup"] > 0 for r in ours)
  assert all(r["p25_ms"] <= r["median_ms"] <= r["p75_ms"] for r in data["rows"])
  softmax = next(r for r in ours if r["op"] == "softmax")
  assert softmax["bytes"] == 2 * 4 * 64 * 32
  assert softmax["fraction_of_copy"] == pytest.approx(softmax["gbps"] / data["copy_gbps"])
  with open(paths["csv"]) as fh:
    assert len(list(csv.DictReader(fh))) == len(data["rows"])
  assert "| softmax | softmax_jax | 64x32 |" in paths["markdown"].read_text()


def test_a_wrong_and_a_failing_implementation_exit_1_and_the_rest_still_run(monkeypatch,
                                                                            capsys, tmp_path):
  def broken(z):
    raise NotImplementedError("no kernel for this backend")

  monkeypatch.setattr(_softmax, "softmax", broken)
  monkeypatch.setattr(_softmax, "log_softmax", lambda z: jax.nn.log_softmax(z) * 1.01)
  md = tmp_path / "out.md"
  code = cli.main(TINY + ["--ops", "softmax,log_softmax", "--markdown", str(md)])
  captured = capsys.readouterr()
  assert code == 1
  assert "NotImplementedError: no kernel for this backend" in captured.err
  assert "rows disagree with their baseline: log_softmax 64x32" in captured.err
  text = md.read_text()
  row = next(x for x in text.splitlines() if x.startswith("| softmax | softmax_jax"))
  assert "failed: NotImplementedError" in row and "| - |" in row
  base = next(x for x in text.splitlines() if x.startswith("| softmax | jax.nn.softmax"))
  assert float(base.split("|")[5]) > 0  # the baseline was still timed
  wrong = next(x for x in text.splitlines() if x.startswith("| log_softmax | softmax_jax"))
  assert wrong.endswith("| WRONG |") and "WRONG" in captured.out


def test_unknown_op_is_rejected(capsys):
  assert cli.main(["bench", "--ops", "nope"]) == 2
  assert "unknown --ops" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--shapes", "64x16x3"], "argument --shapes: bad shape '64x16x3'; write it as NxC"),
    (["--shapes", "64x0"], "bad shape '64x0'"),
    (["--linear-shape", "16x8"], "argument --linear-shape: bad shape '16x8'; write it as NxHxV"),
    (["--dtypes", "float16x"], "unknown dtype 'float16x'; choose from float32, bfloat16"),
    (["--dtype", "float32,float16x"], "unknown dtype 'float16x'"),
    (["--dtype", ","], "empty list ','"),
    (["--repeats", "0"], "argument --repeats: must be an integer >= 1, got '0'"),
    (["--json", "/no/such/folder/b.json"], "the folder /no/such/folder of /no/such/folder/b.json "
                                           "does not exist"),
])
def test_bad_arguments_are_one_line_errors(argv, message, monkeypatch, capsys):
  monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("timed before checking"))
  with pytest.raises(SystemExit) as exit_:
    cli.main(["bench", *argv])
  assert exit_.value.code == 2
  err = capsys.readouterr().err
  assert message in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_plot_without_matplotlib_is_refused_before_timing(monkeypatch, tmp_path, capsys):
  import sys

  monkeypatch.setitem(sys.modules, "matplotlib", None)
  monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("timed before checking"))
  assert cli.main(TINY + ["--plot", str(tmp_path / "p.png")]) == 2
  assert "--plot needs matplotlib: pip install 'softmax_jax[train]'" in capsys.readouterr().err
