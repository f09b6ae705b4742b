"""The benchmark harness runs a tiny grid, writes its files and refuses a wrong answer.

Speed is measured by `softmax-jax bench`, not here.
"""

import csv
import json

import jax
import pytest

from softmax_jax import _softmax, bench, cli

pytestmark = pytest.mark.x64

TINY = ["bench", "--shapes", "64x32", "--dtype", "float32", "--jacobian-shape", "8x8",
        "--product-shape", "2x64", "--linear-shape", "16x8x64", "--repeats", "3"]


def test_tiny_grid_writes_every_output(tmp_path, capsys):
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


def test_plot(tmp_path):
  pytest.importorskip("matplotlib")
  rows, copy = bench.run(bench.default_cases([(32, 16)], ["float32"], ("softmax",)), reps=2)
  bench.plot(rows, tmp_path / "p.png")
  assert (tmp_path / "p.png").stat().st_size > 1000


def test_wrong_implementation_is_a_failure(monkeypatch, capsys):
  monkeypatch.setattr(_softmax, "softmax", lambda z: jax.nn.softmax(z) * 1.01)
  code = cli.main(TINY + ["--ops", "softmax"])
  captured = capsys.readouterr()
  assert code == 1
  assert "WRONG" in captured.out and "disagree with their baseline" in captured.err


def test_unknown_op_is_rejected(capsys):
  assert cli.main(["bench", "--ops", "nope"]) == 2
  assert "unknown --ops" in capsys.readouterr().err


def test_report_tabulates_the_cpu_targets_over_several_runs():
  import copy
  import importlib.util
  import pathlib

  root = pathlib.Path(__file__).resolve().parents[2]
  spec = importlib.util.spec_from_file_location(
      "backend_benchmark", root / "experiments" / "backend_benchmark.py")
  report = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(report)
  run1 = json.loads((root / "docs" / "bench_cpu.json").read_text())
  run2 = copy.deepcopy(run1)
  for r in run2["rows"]:  # the second run misses the 5× Jacobian target
    if r["op"] == "softmax_jacobian" and r["baseline"] == "vmap(jacfwd)":
      r["speedup"] = 4.0
  table = report.runs_table([run1, run2])
  assert "over 2 consecutive runs" in table
  line = next(x for x in table.splitlines() if "vs vmap(jacfwd)" in x)
  assert line.endswith("| 4.00× | no |"), line
  line = next(x for x in table.splitlines() if "softmax_vjp" in x)
  assert line.endswith("| yes |") or line.endswith("| no |")
  del run2["rows"][0]
  with pytest.raises(ValueError, match="not in every run"):
    report.runs_table([run1, run2])


def test_an_implementation_that_fails_is_a_failed_row_and_the_rest_still_run(monkeypatch,
                                                                             capsys, tmp_path):
  def broken(z):
    raise NotImplementedError("no kernel for this backend")

  monkeypatch.setattr(_softmax, "softmax", broken)
  md = tmp_path / "out.md"
  code = cli.main(TINY + ["--ops", "softmax,log_softmax", "--markdown", str(md)])
  captured = capsys.readouterr()
  assert code == 1
  assert "NotImplementedError: no kernel for this backend" in captured.err
  text = md.read_text()
  row = next(x for x in text.splitlines() if x.startswith("| softmax | softmax_jax"))
  assert "failed: NotImplementedError" in row and "| - |" in row
  base = next(x for x in text.splitlines() if x.startswith("| softmax | jax.nn.softmax"))
  assert float(base.split("|")[5]) > 0  # the baseline was still timed
  assert "| log_softmax | softmax_jax" in text and "WRONG" not in text


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
