"""DerivativeReport and Check (softmax_jax/verify/_report.py): the verdict, the table, JSON,
the failures and the picture."""

import json
import math

import numpy as np
import pytest

from softmax_jax.verify import Check, DerivativeReport

NAN = float("nan")


def check(mode="fwd", reference="fd", passed=True, err=1e-8, **kw):
  return Check(mode, reference, passed, err, err * 10, 2e-6, kw.pop("rule", "16ε + 2ε√n"),
               kw.pop("where", "[0][1, 2]"), **kw)


def report(*checks, errors=None):
  return DerivativeReport("f", "((2, 3) float32)", 1, errors is None, tuple(checks), errors)


def test_passed_needs_every_check_that_ran_to_pass_and_one_to_run():
  assert report(check(), check("rev")).passed is True
  assert report(check(), check("rev", passed=False)).passed is False
  unavailable = check("vmap(fwd)", "loop", passed=None, note="TypeError: no jvp")
  assert report(check(), unavailable).passed is True  # an unavailable mode is not a failure
  assert report(unavailable).passed is False  # nothing ran: nothing was verified
  assert report().passed is False


def test_failures_unavailable_and_lookup_by_name():
  bad = check("vmap(rev)", "loop", passed=False, where="example 2: args[0][1]")
  off = check("fwd", "fd", passed=None, note="custom_vjp")
  r = report(check(), bad, off)
  assert r.failures() == [bad] and r.unavailable() == [off]
  assert r["vmap(rev) vs loop"] is bad and bad.status == "FAIL" and off.status == "unavailable"
  with pytest.raises(KeyError, match="no check 'jit vs eager'; the checks are"):
    r["jit vs eager"]


def test_the_table_names_mode_reference_element_errors_bound_and_rule():
  bad = check("vmap(rev)", "loop", passed=False, err=3e-3, where="example 2: args[0]['w'][1]",
              rule="rtol = 16ε + 2ε√n, n = 6; scale = max|ref|")
  off = check("fwd", "fd", passed=None, err=NAN, note="TypeError: can't apply jvp")
  text = str(report(check(), bad, off))
  lines = text.splitlines()
  assert lines[0] == ("check_derivatives(f) at ((2, 3) float32), order 1, fast mode (random "
                      "projections): FAILED (2 checks ran, 1 failed, 1 unavailable)")
  assert lines[1].split() == ["status", "mode", "reference", "worst", "element", "max", "abs",
                              "max", "rel", "bound", "bound", "rule", "/", "note"]
  row = lines[3]
  for part in ("FAIL", "vmap(rev)", "loop", "example 2: args[0]['w'][1]", "3.00e-03",
               "3.00e-02", "2.00e-06", "rtol = 16ε + 2ε√n, n = 6; scale = max|ref|"):
    assert part in row
  assert lines[4].split()[:3] == ["unavailable", "fwd", "fd"] and "can't apply jvp" in lines[4]
  # the columns line up: every row starts its mode where the header does
  assert len({line.index(word) for line, word in zip(lines[1:], ["mode", "fwd", "vmap(rev)",
                                                                 "fwd"], strict=True)}) == 1


def test_json_is_strict_and_round_trips(tmp_path):
  off = check("fwd", "fd", passed=None, err=NAN)
  r = report(check(err=np.float32(1e-8)), off)
  data = json.loads(json.dumps(r.to_json(), allow_nan=False))
  assert data["passed"] is True and data["fast"] is True and data["order"] == 1
  assert data["checks"][1]["max_abs_err"] is None and data["checks"][1]["passed"] is None
  assert math.isclose(data["checks"][0]["max_abs_err"], 1e-8, rel_tol=1e-6)
  path = tmp_path / "report.json"
  r.save_json(path)
  assert json.loads(path.read_text(encoding="utf-8")) == data


def test_plot_draws_error_over_bound_for_full_jacobians(tmp_path):
  pytest.importorskip("matplotlib")
  errors = {"fwd vs fd": np.full((4, 6), 1e-6), "rev vs fd": np.zeros((4, 6))}
  r = report(check(), check("rev"), errors=errors)
  path = tmp_path / "errors.png"
  r.plot(path)
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_full_jacobians_is_one_line_naming_fast_mode(tmp_path):
  with pytest.raises(ValueError, match=r"plot: this report has no full Jacobians \(fast mode\)"):
    report(check()).plot(tmp_path / "x.png")
