"""The verification grid (softmax_jax.verify._grid, _cases): its points, its rows and what
it prints."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softmax_jax.verify import _cases, _comparisons, _grid
from softmax_jax.verify._finite_differences import float64_enabled


def test_points_run_over_every_dtype_class_count_and_scale():
  spec = {"dtypes": ("float32", "bfloat16"), "classes": (2, 10), "scales": ("1", "-inf")}
  pts = list(_cases.points(spec))
  assert len(pts) == 8 and pts[0] == _cases.Point("float32", 2, "1")
  assert pts[-1] == ("bfloat16", 10, "-inf") and pts[1].scale == "-inf"
  for key in ("dtypes", "classes", "scales"):
    assert set(_grid.QUICK[key]) <= set(_grid.FULL[key])


@pytest.mark.parametrize("scale", ["-inf", "masked"])
def test_a_nonfinite_point_has_a_row_without_valid_entries(scale):
  case = _cases.make_case("float32", 10, scale)
  valid = np.isfinite(np.asarray(case.x)) if scale == "-inf" else case.mask
  assert (case.where is None) == (scale == "-inf")
  assert not valid[-1].any() and valid[:-1].any(-1).all()
  labels = np.asarray(case.labels)
  assert valid[np.arange(len(labels)), labels][:-1].all()  # every label is a valid class
  t = np.asarray(case.targets, np.float64)
  assert np.all(t[~valid] == 0) and np.allclose(t[:-1].sum(-1), 1, rtol=1e-6)


def test_a_point_draws_the_same_inputs_every_time_in_its_dtype():
  a, b = _cases.make_case("bfloat16", 10, "100"), _cases.make_case("bfloat16", 10, "100")
  assert a.x.dtype == jnp.bfloat16 and a.x.shape == (3, 10)
  np.testing.assert_array_equal(np.asarray(a.x, np.float32), np.asarray(b.x, np.float32))
  assert _cases.make_case("float32", 32768, "1").x.shape == (2, 32768)  # fewer rows when large
  assert np.isfinite(np.asarray(_cases.make_case("float16", 10, "1e4").x)).all()  # clipped


def test_elementwise_functions_have_no_rows_at_nonfinite_points():
  assert _grid.run_case("float32", 10, "-inf", functions=["sigmoid"]) == []
  rows = _grid.run_case("float32", 10, "1", functions=["sigmoid"])
  assert [(r.method, r.impl) for r in rows] == [
      ("value", "softmax_jax"), ("analytic", "softmax_jax"), ("grad", "softmax_jax"),
      ("grad", "jax.nn")]
  assert all(r.status in ("ok", "(within)") and r.n == 1 for r in rows)


@pytest.mark.internals
def test_grid_catches_the_missing_term_at_32768_classes(monkeypatch):
  # entries of the VJP are ~3e-5 here: a fixed absolute tolerance of 16 ε ≈ 2e-6 passed this bug
  monkeypatch.setattr(_comparisons, "softmax_vjp", lambda z, u: _comparisons.softmax(z) * u)
  rows = _grid.run_case("float32", 32768, "1", functions=["softmax"])
  status = {(r.function, r.method): r.status for r in rows if r.impl == "softmax_jax"}
  assert status[("softmax_vjp", "analytic")] == "FAIL"
  assert status[("softmax_jvp", "analytic")] == "ok" and status[("softmax", "jacrev")] == "ok"
  table = _grid.format_table(rows)
  assert "error" in table.splitlines()[0] and "≤ bound" in table.splitlines()[0]
  bad = next(r for r in rows if r.function == "softmax_vjp")
  assert bad.error > bad.bound == pytest.approx(bad.rtol * bad.bound_scale)
  assert bad.n == 32768 and "√n" in bad.rule


def _row(impl, status):
  return _grid.Row("softmax", "", "float32", 10, "1", "value", impl, 0.0, 0.0, 1e-6, 0.0, status)


def test_summary_counts_our_rows_and_the_baselines_beyond_their_bound():
  rows = [_row("softmax_jax", "ok"), _row("softmax_jax", "FAIL"), _row("softmax_jax", "ok"),
          _row("jax.nn", "(beyond)"), _row("optax", "(within)")]
  assert _grid.summary(rows) == ("2 passed, 1 failed (softmax_jax rows; jax.nn/optax beyond "
                                 "their bound on 1 of 2 rows)")
  lines = _grid.format_table(rows[:2]).splitlines()
  assert len(lines) == 2 + 2 + 1 and lines[-1] == _grid.legend()
  assert lines[3].split()[-1] == "FAIL" and lines[2].split()[1] == "-"  # no variant


def _one_percent_off_softmax():
  @jax.custom_jvp
  def f(x):
    return _grid.softmax(x)
  f.defjvp(lambda p, t: (f(p[0]), 1.01 * jax.jvp(_grid.softmax, p, t)[1]))
  return f


@pytest.mark.internals
def test_above_dense_max_the_grid_checks_by_projections(monkeypatch):
  with float64_enabled():
    case = _cases.make_case("float32", 32768, "1")
  rows = _grid.fast_rows(case, ["softmax"])
  assert [(r.function, r.variant, r.method, r.status) for r in rows] == [
      ("softmax", "projections", m, "ok") for m in ("fwd~fd", "rev~fd", "rev~fwd")]
  assert all(r.error <= r.bound for r in rows)  # the error its bound is for, not another's
  assert _grid.fast_rows(_cases.make_case("float32", 10, "1")) == []  # a Jacobian fits there
  monkeypatch.setitem(_grid.FAST_FUNCTIONS, "softmax", _one_percent_off_softmax())
  bad = _grid.fast_rows(case, ["softmax"])
  assert {r.method: r.status for r in bad} == {"fwd~fd": "FAIL", "rev~fd": "FAIL", "rev~fwd": "ok"}
  assert all((r.error > r.bound) == (r.status == "FAIL") for r in bad)

