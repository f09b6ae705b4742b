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
