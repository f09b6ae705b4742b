"""experiments/backend_benchmark.py: the CPU targets tabulated over several runs."""

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report():
  spec = importlib.util.spec_from_file_location(
      "backend_benchmark", ROOT / "experiments" / "backend_benchmark.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _run(jacfwd=6.0, vjp=150.0):
  """The rows of one CPU run, holding the figures the targets read."""
  def row(op, speedup, baseline, shape, impl="softmax_jax"):
    return {"op": op, "impl": impl, "baseline": baseline, "shape": shape, "dtype": "float32",
            "speedup": speedup, "note": ""}

  return {"rows": [
      row("xent_int_fwd", 1.2, "optax", "4096x1024"),
      row("softmax_jacobian", jacfwd, "vmap(jacfwd)", "256x128"),
      row("softmax_jacobian", 3.0, "vmap(jacrev)", "256x128"),
      row("softmax_jacobian", 1.1, "closed form y(I − y)", "256x128"),
      row("softmax_jacobian", 0.9, "outer-product write", "256x128"),
      row("softmax_vjp", vjp, "dense J @ v", "8x4096"),
      row("softmax", 1.0, "jax.nn.softmax", "4096x1024")]}


def test_a_target_is_met_only_if_every_run_meets_it(report):
  table = report.runs_table([_run(), _run(jacfwd=4.0), _run(vjp=120.0)])
  assert "over 3 consecutive runs" in table
  line = next(x for x in table.splitlines() if "vs vmap(jacfwd)" in x)
  assert line.endswith("| 6.00× | 4.00× | 6.00× | no |"), line
  line = next(x for x in table.splitlines() if "softmax_vjp" in x)
  assert line.endswith("| 150× | 150× | 120× | yes |"), line
  line = next(x for x in table.splitlines() if "outer-product write" in x)
  assert line.endswith("| 1.11 | 1.11 | 1.11 | yes |"), line  # time ratio 1/0.9 ≤ 1.25


def test_a_failed_row_counts_as_a_miss(report):
  failed = _run()
  failed["rows"][1].update(speedup=None, note="failed: NotImplementedError: no kernel")
  line = next(x for x in report.runs_table([failed]).splitlines() if "vs vmap(jacfwd)" in x)
  assert line.endswith("| 0.00× | no |"), line


def test_runs_that_disagree_on_the_figures_are_refused(report):
  short = _run()
  del short["rows"][0]
  with pytest.raises(ValueError, match="not in every run"):
    report.runs_table([_run(), short])


def _result_row(**fields):
  base = dict(op="softmax", impl="softmax_jax", baseline="jax.nn.softmax", shape="64x32",
              dtype="float32", backend="cpu", device="cpu", median_ms=0.5, p25_ms=0.4,
              p75_ms=0.6, bytes=16384, gbps=32.8, fraction_of_copy=0.5, temp_bytes=0,
              speedup=1.25, correct=True, note="")
  return {**base, **fields}


def test_a_run_with_context_and_compile_times_shows_them(report):
  ctx = {"versions": {"jax": "0.10.2", "jaxlib": "0.10.2", "optax": "0.2.8"},
         "backend": "cpu", "device_kind": "cpu", "device_count": 1,
         "cpu": {"model": "AMD EPYC", "cpu_count": 2, "usable_cpus": 2}, "xla_flags": "",
         "date": "2026-12-01", "git_commit": "abc", "command": "softmax-jax bench --quick"}
  rows = [_result_row(ref_gbps=65.6, compile_ms=300.0),
          _result_row(impl="jax.nn.softmax", speedup=None, ref_gbps=65.6, compile_ms=100.0)]
  text = report.render([{"machine": "m", "copy_gbps": 7.0, "context": ctx, "rows": rows}])
  assert ("Context: jax 0.10.2, jaxlib 0.10.2, optax 0.2.8; cpu (cpu) × 1; CPU AMD EPYC, 2 "
          "cores (2 usable)") in text
  assert "Command: `softmax-jax bench --quick`." in text
  assert ("Compile time: 2 programs, 0.4 s in all (0.3 s this package's); the slowest 300 ms "
          "(softmax 64x32 float32, softmax_jax).") in text
  assert "predates the per-case references" not in text
  assert "| 300 | 32.8 | 65.6 | 0.50 | - |" in text


def test_a_run_from_before_the_references_says_what_its_fraction_is_over(report):
  text = report.render([{"machine": "m", "copy_gbps": 7.0, "rows": [_result_row()]}])
  assert "This run predates the per-case references and compile times" in text
  assert "Compile time:" not in text and "Context:" not in text
