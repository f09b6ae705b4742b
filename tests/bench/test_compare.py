"""`softmax-jax bench compare`: the spread rule on rows with known quartiles (a planted 2x
regression is flagged, overlapping spreads and faster or barely slower cases are not), the
gate, repeats and the relative mode; two real runs of the same code compared; the output
files; and one-line errors (exit 2) for bad files and arguments.

Speed is measured by `softmax-jax bench`, not here.
"""

import copy
import dataclasses
import json

import pytest

from softmax_jax import bench
from softmax_jax.bench._compare import CompareError, compare

from _util import cli_exit_code, one_line_error


def row(op, impl, median, spread=0.1, baseline=None, shape="64x32", dtype="float32"):
  """A bench row with quartiles ``median × (1 ∓ spread)``."""
  base = baseline or ("jax.nn.softmax" if impl == "softmax_jax" else impl)
  return {"op": op, "impl": impl, "baseline": base, "shape": shape, "dtype": dtype,
          "backend": "cpu", "device": "cpu", "median_ms": median,
          "p25_ms": median * (1 - spread), "p75_ms": median * (1 + spread)}


def run(*rows, **context):
  return {"context": {"backend": "cpu", "device_kind": "cpu", **context}, "rows": list(rows)}


def scaled(data, factor, impl="softmax_jax", op=None):
  """``data`` with the times of ``impl``'s rows (of ``op``, or all) times ``factor``."""
  out = copy.deepcopy(data)
  for r in out["rows"]:
    if r["impl"] == impl and op in (None, r["op"]):
      for k in ("median_ms", "p25_ms", "p75_ms"):
        if k in r:
          r[k] *= factor
  return out


A = run(row("softmax", "softmax_jax", 1.0), row("softmax", "jax.nn.softmax", 1.0),
        row("log_softmax", "softmax_jax", 2.0, baseline="jax.nn.log_softmax"),
        row("log_softmax", "jax.nn.log_softmax", 2.0))


def verdicts(comparison, k=1):
  return {(ln.op, ln.impl): ln.verdicts[k] for ln in comparison.lines}


def test_a_planted_2x_regression_is_flagged_and_nothing_else():
  c = compare([A, scaled(A, 2.0, op="softmax")], names=["a", "b"])
  assert verdicts(c) == {("softmax", "softmax_jax"): "REGRESSED",
                         ("softmax", "jax.nn.softmax"): "within spread",
                         ("log_softmax", "softmax_jax"): "within spread",
                         ("log_softmax", "jax.nn.log_softmax"): "within spread"}
  [(line, name, ratio)] = c.regressions
  assert (line.op, name, ratio) == ("softmax", "b", pytest.approx(2.0))


def test_the_same_run_and_noise_within_the_spread_are_not_flagged():
  assert not compare([A, copy.deepcopy(A)]).regressions
  # 1.6x slower, but each run's quartiles span ±40 %: the intervals overlap.
  wide = run(row("softmax", "softmax_jax", 1.0, spread=0.4))
  c = compare([wide, scaled(wide, 1.6)])
  assert verdicts(c) == {("softmax", "softmax_jax"): "within spread"} and not c.regressions


@pytest.mark.parametrize("factor, verdict", [
    (1.2, "slower"),  # beyond the spread but under the threshold
    (0.5, "faster"),
    (1.04, "within spread"),  # quartiles ±1 %, but every interval is at least ±5 %
])
def test_slower_under_the_threshold_faster_and_the_noise_floor(factor, verdict):
  tight = run(row("softmax", "softmax_jax", 1.0, spread=0.01))
  c = compare([tight, scaled(tight, factor)])
  assert verdicts(c)[("softmax", "softmax_jax")] == verdict and not c.regressions
  assert compare([tight, scaled(tight, factor)], noise=0.0).lines[0].verdicts[1] == (
      "slower" if factor > 1 else "faster")


def test_the_gate_chooses_the_cases_that_can_regress():
  slow_baselines = scaled(A, 2.0, impl="jax.nn.softmax")
  assert not compare([A, slow_baselines]).regressions  # default: our rows only
  c = compare([A, slow_baselines], gate=["softmax/*"])
  assert [(ln.impl, n) for ln, n, _ in c.regressions] == [("jax.nn.softmax", "run 2")]
  slow = scaled(A, 2.0)
  assert [ln.op for ln, _, _ in compare([A, slow], gate="log*").regressions] == ["log_softmax"]
  with pytest.raises(CompareError, match="gate 'xent_typo/softmax_jax' matches no case"):
    compare([A, slow], gate="xent_typo")


def test_relative_mode_cancels_a_slower_machine_but_not_a_slower_implementation():
  machine = scaled(scaled(A, 2.0), 2.0, impl="jax.nn.softmax")
  machine = scaled(machine, 2.0, impl="jax.nn.log_softmax")  # every row twice as slow
  assert len(compare([A, machine]).regressions) == 2
  c = compare([A, machine], relative=True)
  assert not c.regressions and [ln.impl for ln in c.lines] == ["softmax_jax"] * 2
  assert c.baseline_drift == {}  # the baselines are the yardstick there
  assert compare([A, machine]).baseline_drift == {"run 2": pytest.approx(2.0)}
  ours = compare([A, scaled(A, 2.0, op="softmax")], relative=True)
  assert [(ln.op, ln.verdicts[1]) for ln in ours.lines] == [("softmax", "REGRESSED"),
                                                            ("log_softmax", "within spread")]


def test_repeats_widen_the_spread_to_what_varies_between_runs():
  fast, slow = A, scaled(A, 1.6, op="softmax")  # one process 1.6x slower than another
  assert compare([fast, slow]).regressions  # a single run's quartiles do not see it
  c = compare([[fast, slow], scaled(A, 1.5, op="softmax")])
  assert not c.regressions
  line = c.lines[0]
  assert line.entries[0].repeats == 2 and line.entries[0].median_ms == pytest.approx(1.3)
  assert line.entries[0].low == pytest.approx(0.9) and line.entries[0].high == pytest.approx(1.76)
  assert compare([[fast, slow], scaled(A, 4.0, op="softmax")]).regressions


def test_failed_and_missing_cases_and_the_context_differences():
  failed = copy.deepcopy(A)
  failed["rows"][0].update(median_ms=float("nan"), p25_ms=float("nan"), p75_ms=float("nan"))
  b = run(*failed["rows"][:3], backend="gpu", device_kind="NVIDIA H100")
  c = compare([A, b])
  assert verdicts(c)[("softmax", "softmax_jax")] == "REGRESSED"  # failed where it ran
  assert verdicts(c)[("log_softmax", "jax.nn.log_softmax")] == "missing"
  assert dict(c.differences) == {"backend": ["cpu", "gpu"], "device_kind": ["cpu",
                                                                           "NVIDIA H100"]}
  text = c.text()
  assert "differs: backend: cpu | gpu" in text and "failed" in text
  assert json.loads(json.dumps(c.as_dict(), allow_nan=False))["regressions"][0]["op"] == (
      "softmax")  # strict JSON: NaN written as null
  with pytest.raises(CompareError, match="has no case in common"):
    compare([A, run(row("softmax", "softmax_jax", 1.0, shape="8x8"))])
  with pytest.raises(CompareError, match="need at least 2 runs"):
    compare([A])


def test_real_runs_of_the_same_code_and_a_planted_regression(tmp_path, capsys):
  cases = [k for k in bench.row_cases(512, 1024, "float32") if k.op in ("softmax", "xent_int_fwd")]
  runs = {}
  for name in ("a1", "a2", "b1", "b2"):
    rows, _ = bench.run(cases, reps=15, measure_copy=False)
    runs[name] = {"rows": [dataclasses.asdict(r) for r in rows]}
    (tmp_path / f"{name}.json").write_text(json.dumps(runs[name]))
  out = {k: tmp_path / f"cmp.{e}" for k, e in (("markdown", "md"), ("plot", "png"),
                                                ("json", "json"))}
  outputs = [f"--{k}={v}" for k, v in out.items()]
  # On a shared machine, what one process measures moves between processes by more than
  # its own quartiles show: two repeats a side, each time set against jax.nn or optax
  # timed beside it (--relative).
  a, b = f"{tmp_path}/a1.json,{tmp_path}/a2.json", f"{tmp_path}/b1.json,{tmp_path}/b2.json"
  assert cli_exit_code(["bench", "compare", a, b, "--relative", *outputs]) == 0
  assert "REGRESSED" not in capsys.readouterr().out
  assert "| softmax | softmax_jax * | 512x1024 | float32 |" in out["markdown"].read_text()
  assert out["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert len(json.loads(out["json"].read_text())["lines"]) == 2

  for name in ("a1", "a2"):
    (tmp_path / f"p{name}.json").write_text(json.dumps(scaled(runs[name], 2.0, op="softmax")))
  # The rule, on the real runs' own quartiles: doubling every time is beyond the spread
  # unless the runs' intervals (each widened to ±5 %) together span a factor of 2.
  ours = [r for n in ("a1", "a2") for r in runs[n]["rows"]
          if (r["op"], r["impl"]) == ("softmax", "softmax_jax")]
  low = min(min(r["p25_ms"], 0.95 * r["median_ms"]) for r in ours)
  high = max(max(r["p75_ms"], 1.05 * r["median_ms"]) for r in ours)
  code = cli_exit_code(["bench", "compare", a, f"{tmp_path}/pa1.json,{tmp_path}/pa2.json"])
  captured = capsys.readouterr()
  if 2 * low > high:
    assert code == 1
    assert ("1 gated cases regressed beyond 1.25x: softmax softmax_jax 512x1024 float32 in "
            "pa1.json (x2) 2.00x") in captured.err
  else:
    assert code == 0 and "within spread" in captured.out


@pytest.mark.parametrize("content, message", [
    (None, "missing.json: no such file"),
    ('{"rows": [\n  {"op": 1,}\n]}', "bad.json: not valid JSON: Expecting property name "
                                    "enclosed in double quotes at line 2, column 12"),
    ('{"machine": "x"}', "bad.json: no 'rows' list: not the JSON of softmax-jax bench"),
    ('{"rows": [{"op": "softmax"}]}', "bad.json: row 0 has no impl, shape, dtype, median_ms"),
])
def test_unreadable_or_invalid_files_are_one_line_errors(content, message, tmp_path, capsys):
  good = tmp_path / "good.json"
  good.write_text(json.dumps(A))
  bad = tmp_path / ("missing.json" if content is None else "bad.json")
  if content is not None:
    bad.write_text(content)
  assert cli_exit_code(["bench", "compare", str(good), str(bad)]) == 2
  err = one_line_error(capsys)
  assert err.startswith("softmax-jax bench compare: ") and message in err


@pytest.mark.parametrize("argv, message", [
    (["a.json"], "give at least 2 runs, the baseline first; got 1"),
    (["a.json", "b.json", "--names", "x"], "argument --names: 1 names for 2 runs"),
    (["a.json", "b.json", "--threshold", "0.5"], "argument --threshold: must be a ratio >= 1"),
    (["a.json", "b.json", "--noise", "2"], "argument --noise: must be a fraction in [0, 1)"),
    (["a.json", "b.json", "--json", "/no/such/dir/c.json"], "the folder /no/such/dir"),
    (["a.json", "b.json", "--plot", "c.plot"], "argument --plot: c.plot: matplotlib writes no "
                                               "'.plot' files; use one of"),
])
def test_bad_arguments_are_one_line_errors(argv, message, capsys):
  assert cli_exit_code(["bench", "compare", *argv]) == 2
  err = one_line_error(capsys)
  assert err.startswith("softmax-jax bench compare: error: ") and message in err


def test_no_common_case_and_a_gate_matching_nothing_exit_2(tmp_path, capsys):
  a, b = tmp_path / "a.json", tmp_path / "b.json"
  a.write_text(json.dumps(A))
  b.write_text(json.dumps(run(row("softmax", "softmax_jax", 1.0, shape="8x8"))))
  assert cli_exit_code(["bench", "compare", str(a), str(b)]) == 2
  assert "b.json has no case in common with a.json" in one_line_error(capsys)
  assert cli_exit_code(["bench", "compare", str(a), str(a), "--gate", "nope"]) == 2
  assert f"gate 'nope/softmax_jax' matches no case of {a}" in one_line_error(capsys)


def test_bench_help_mentions_compare(capsys):
  assert cli_exit_code(["bench", "--help"]) == 0
  assert "softmax-jax bench compare A.json B.json" in capsys.readouterr().out


def test_rows_without_quartiles_use_the_noise_floor_and_a_failed_yardstick_is_missing():
  bare = {"rows": [{k: v for k, v in r.items() if k not in ("p25_ms", "p75_ms")}
                   for r in A["rows"]]}
  c = compare([bare, scaled(bare, 2.0, op="softmax")])
  assert [(ln.op, ln.verdicts[1]) for ln in c.lines if ln.gated] == [
      ("softmax", "REGRESSED"), ("log_softmax", "within spread")]
  assert c.lines[0].entries[0].low == pytest.approx(0.95)
  no_yardstick = copy.deepcopy(A)
  no_yardstick["rows"][1]["median_ms"] = float("nan")  # jax.nn.softmax failed
  rel = compare([A, no_yardstick], relative=True)
  assert [(ln.op, ln.verdicts[1]) for ln in rel.lines] == [("softmax", "missing"),
                                                           ("log_softmax", "within spread")]
