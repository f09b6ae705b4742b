"""Scaling sweeps: the grids, a small real sweep writing its JSON and its plot, which
`softmax-jax bench compare` then reads; ops that are not row-wise are refused before timing.

Speed is measured by `softmax-jax bench --sweep`, not here.
"""

import json

import pytest

from softmax_jax.bench import _sweep, _timing
from softmax_jax.bench._cases import row_cases
from softmax_jax.bench._compare import compare


@pytest.mark.parametrize("quick", [False, True])
def test_the_classes_grid_keeps_the_elements_and_the_rows_grid_the_classes(quick):
  classes, rows = _sweep.shapes("classes", quick=quick), _sweep.shapes("rows", quick=quick)
  assert {n * c for n, c in classes} == {(1 << 16) if quick else (1 << 22)}
  assert {c for _, c in rows} == {256 if quick else 1024}
  cs, ns = [c for _, c in classes], [n for n, _ in rows]
  assert cs == sorted(cs) and ns == sorted(ns)
  assert all(b / a == (4 if quick else 2) for a, b in zip(cs, cs[1:], strict=False))
  if not quick:
    assert (cs[0], cs[-1], ns[0], ns[-1]) == (1 << 8, 1 << 17, 1 << 6, 1 << 14)
  else:
    assert len(cs) == len(ns) == 4


def test_the_sweepable_ops_are_those_of_row_cases():
  assert _sweep.ROW_OPS == tuple(k.op for k in row_cases(4, 8, "float32"))
  assert set(_sweep.DEFAULT_OPS) <= set(_sweep.ROW_OPS)


def test_an_unknown_kind_or_op_is_refused_before_any_timing(monkeypatch):
  monkeypatch.setattr(_timing, "run_case", lambda *a, **k: pytest.fail("timed"))
  with pytest.raises(ValueError, match="kind must be one of rows, classes, got 'cols'"):
    _sweep.sweep("cols")
  with pytest.raises(ValueError, match=r"ops \['softmax_jacobian'\] are not row-wise"):
    _sweep.sweep("rows", ops=("softmax", "softmax_jacobian"), quick=True)


def test_a_small_sweep_writes_its_json_and_plot_and_compare_reads_it(tmp_path):
  calls = []
  data = _sweep.sweep("rows", ops=("softmax",), reps=3, quick=True,
                      progress=lambda i, n, case: calls.append((i, n, case.shape)))
  grid = _sweep.shapes("rows", quick=True)
  assert calls == [(i, len(grid), s) for i, s in enumerate(grid)]
  assert (data["kind"], data["x"], data["fixed"]) == ("rows", "rows", {"classes": 256})
  assert data["context"]["backend"] == "cpu"
  rows = data["rows"]
  assert [(r["impl"], r["x"], r["shape"]) for r in rows] == [
      (impl, n, f"{n}x{c}") for n, c in grid for impl in ("softmax_jax", "jax.nn.softmax")]
  assert all(r["correct"] and r["median_ms"] > 0 for r in rows)
  assert all(_sweep.fraction(r) > 0 for r in rows)  # each against a reference bandwidth
  path = tmp_path / "sweep.json"
  path.write_text(json.dumps(data))
  png = tmp_path / "sweep.png"
  _sweep.plot_sweep(json.loads(path.read_text()), png)
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

  lines = _sweep.lines(data)
  assert list(lines) == ["softmax"] and [x for x, _ in lines["softmax"]["softmax_jax"]] == [
      n for n, _ in grid]
  slower = json.loads(path.read_text())
  for r in slower["rows"]:
    if r["impl"] == "softmax_jax" and r["x"] == grid[-1][0]:
      top = max(r["p75_ms"], 1.5 * r["median_ms"])  # above the spread however noisy the run
      r.update(median_ms=3 * top, p25_ms=2 * top, p75_ms=4 * top)
  c = compare([data, slower])
  assert [(ln.shape, ln.verdicts[1]) for ln in c.lines if ln.impl == "softmax_jax"][-1] == (
      f"{grid[-1][0]}x256", "REGRESSED")
  assert len(c.regressions) == 1


def test_a_failed_point_is_left_out_of_the_lines_and_an_empty_sweep_is_not_plotted(tmp_path):
  ok = {"op": "softmax", "impl": "softmax_jax", "x": 64, "median_ms": 1.0, "p25_ms": 0.9,
        "p75_ms": 1.1, "fraction_of_copy": 0.5, "correct": True}
  failed = {**ok, "x": 128, "median_ms": float("nan"), "fraction_of_copy": None}
  assert [x for x, _ in _sweep.lines({"rows": [failed, ok]})["softmax"]["softmax_jax"]] == [64]
  with pytest.raises(ValueError, match="no timed rows"):
    _sweep.plot_sweep({"rows": [failed]}, tmp_path / "x.png")
