"""`softmax-jax bench`: a tiny grid runs every operation and writes its files; a wrong or
failing implementation makes it exit 1; bad arguments are refused before any timing.

Speed is measured by `softmax-jax bench`, not here.
"""

import csv
import dataclasses
import json
import math
import os
import subprocess
import sys

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
  assert data["copy_gbps"] > 0 and data["machine"].startswith(f"{os.cpu_count()}-core")
  ours = [r for r in data["rows"] if r["impl"] == "softmax_jax"]
  assert all(r["correct"] and r["median_ms"] > 0 and r["speedup"] > 0 for r in ours)
  assert all(r["p25_ms"] <= r["median_ms"] <= r["p75_ms"] for r in data["rows"])
  assert all(0 < r["compile_ms"] <= r["first_call_ms"] for r in data["rows"])
  softmax = next(r for r in ours if r["op"] == "softmax")
  assert softmax["bytes"] == 2 * 4 * 64 * 32
  # over the copy of its own bytes, not the large array's
  assert softmax["fraction_of_copy"] == pytest.approx(softmax["gbps"] / softmax["ref_gbps"])
  linear = next(r for r in ours if r["op"] == "linear_xent_fwd_bwd")
  assert linear["fraction_of_matmul"] == pytest.approx(linear["gflops"] / linear["ref_gflops"])
  ctx = data["context"]
  assert ctx["versions"]["jax"] == jax.__version__ and ctx["backend"] == jax.default_backend()
  assert ctx["device_count"] == jax.device_count() and ctx["cpu"]["cpu_count"] == os.cpu_count()
  assert ctx["command"].startswith("softmax-jax bench --dtype float32 --shapes 64x32 ")
  assert "--linear-shape 16x8x64 --repeats 3 --json" in ctx["command"]
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
    (["--json", "same.out", "--csv", "./same.out"], "--csv and --json are the same file"),
    (["--sweep", "rows", "--csv", "s.csv"], "--sweep writes --json and --plot only"),
    (["--sweep", "cols"], "argument --sweep: invalid choice: 'cols'"),
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


@pytest.mark.internals
def test_an_output_file_that_cannot_be_written_is_refused_before_timing(monkeypatch, tmp_path,
                                                                        capsys):
  locked = tmp_path / "locked.json"
  locked.write_text("{}")
  real = os.access  # as root every file is writable: the check is what is tested
  monkeypatch.setattr(os, "access", lambda p, mode: real(p, mode) and str(p) != str(locked))
  monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("timed before checking"))
  with pytest.raises(SystemExit) as exit_:
    cli.main(TINY + ["--json", str(locked)])
  assert exit_.value.code == 2
  err = capsys.readouterr().err
  assert f"argument --json: {locked} is not writable" in err and err.count("\n") == 1


def _grid(monkeypatch, argv):
  """The cases and repetitions ``softmax-jax bench argv`` would time (nothing is timed)."""
  seen = {}

  def fake_run(cases, *, reps, progress, measure_copy):
    seen.update(cases=cases, reps=reps, measure_copy=measure_copy)
    return bench.Timings([], None)

  monkeypatch.setattr(bench, "run", fake_run)
  assert cli.main(["bench", *argv]) == 0
  return seen


@pytest.mark.internals
def test_quick_is_a_small_grid_and_the_options_given_still_apply(monkeypatch):
  quick = _grid(monkeypatch, ["--quick"])
  assert {c.op for c in quick["cases"]} == {"softmax", "xent_int_fwd_bwd", "softmax_jacobian",
                                             "linear_xent_fwd_bwd"}
  assert {c.dtype for c in quick["cases"]} == {"float32"}
  assert max(math.prod(c.shape) for c in quick["cases"]) <= 256 * 64 * 4096
  assert quick["reps"] == 5 and not quick["measure_copy"]
  given = _grid(monkeypatch, ["--quick", "--ops", "softmax", "--shapes", "8x16", "--repeats", "2"])
  assert [(c.op, c.shape) for c in given["cases"]] == [("softmax", (8, 16))]
  assert given["reps"] == 2
  full = _grid(monkeypatch, ["--ops", "softmax"])
  assert [c.shape for c in full["cases"]] == [(4096, 1024), (512, 32768)] * 2
  assert full["reps"] == 15 and full["measure_copy"]


@pytest.mark.internals
def test_sweep_runs_the_sweep_module_and_writes_what_it_returns(monkeypatch, tmp_path, capsys):
  calls = {}

  def sweep(kind, **options):
    calls["sweep"] = (kind, options)
    options["progress"](0, 1, "point")
    rows = bench.run_case(bench.row_cases(4, 8, "float32")[0], reps=1, key=jax.random.key(0))
    return {"kind": kind, "context": {"backend": "cpu"},
            "rows": [dict(dataclasses.asdict(r), x=4) for r in rows]}

  from softmax_jax.bench import _sweep

  monkeypatch.setattr(_sweep, "sweep", sweep)
  monkeypatch.setattr(_sweep, "plot_sweep",
                      lambda data, path: calls.setdefault("plot", (data["kind"], path)))
  out = tmp_path / "s.json"
  assert cli.main(["bench", "--sweep", "classes", "--dtype", "bfloat16,float32", "--ops",
                   "softmax", "--repeats", "2", "--json", str(out), "--plot",
                   str(tmp_path / "s.png")]) == 0
  kind, options = calls["sweep"]
  assert kind == "classes" and options["dtype"] == "bfloat16" and options["ops"] == ("softmax",)
  assert options["reps"] == 2 and options["quick"] is False
  assert calls["plot"] == ("classes", str(tmp_path / "s.png"))
  data = json.loads(out.read_text())
  assert data["context"]["backend"] == "cpu" and len(data["rows"]) == 2
  assert data["context"]["command"].startswith("softmax-jax bench --sweep classes --dtype ")
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].split()[:2] == ["x", "op"] and lines[1].split()[:3] == ["4", "softmax",
                                                                          "softmax_jax"]
  assert cli.main(["bench", "--sweep", "rows", "--quick"]) == 0
  assert calls["sweep"] == ("rows", {"quick": True, "progress": calls["sweep"][1]["progress"]})


def test_a_sweep_of_an_operation_that_is_not_row_wise_is_refused_before_timing(monkeypatch,
                                                                               capsys):
  from softmax_jax.bench import _sweep

  monkeypatch.setattr(_sweep, "sweep", lambda *a, **k: pytest.fail("swept before checking"))
  assert cli.main(["bench", "--sweep", "rows", "--ops", "softmax,softmax_jacobian"]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "Traceback" not in err
  assert "--sweep times the row-wise operations only, not --ops softmax_jacobian" in err


def test_a_backend_that_is_not_here_is_one_line_and_exit_2():
  # in a new process: the platform is chosen before JAX starts a backend
  proc = subprocess.run([sys.executable, "-m", "softmax_jax", "bench", "--backend", "gpu",
                         "--ops", "softmax"], capture_output=True, text=True, timeout=120,
                        env={**os.environ, "JAX_PLATFORMS": ""})
  if proc.returncode == 0 or "gpu" in proc.stdout:
    pytest.skip("this machine has a GPU")
  assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
  assert proc.stderr.startswith("softmax-jax bench: --backend gpu: JAX found no such backend")


@pytest.mark.internals
def test_the_context_records_the_settings_and_survives_what_it_cannot_read(monkeypatch):
  from softmax_jax.bench import _context

  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
  monkeypatch.setenv("JAX_TRACEBACK_FILTERING", "off")
  ctx = bench.context(["softmax-jax", "bench", "--quick"])
  assert ctx["argv"] == ["softmax-jax", "bench", "--quick"]
  assert ctx["xla_flags"] == "--xla_cpu_multi_thread_eigen=false"
  assert ctx["environment"]["JAX_TRACEBACK_FILTERING"] == "off"
  assert ctx["jax_config"]["jax_enable_x64"] is False and ctx["versions"]["optax"]
  json.dumps(ctx)  # JSON-ready
  assert ctx["git_commit"] is None or len(ctx["git_commit"].removesuffix("+dirty")) == 40

  def no_git(*args, **kwargs):
    raise FileNotFoundError("git")

  monkeypatch.setattr(_context.subprocess, "run", no_git)
  monkeypatch.setattr(_context.pathlib.Path, "read_text", lambda self: 1 / 0)  # no /proc
  ctx = bench.context()
  assert ctx["git_commit"] is None and ctx["cpu"]["model"]  # from platform instead
