"""`softmax-jax verify`: the quick grid passes; a wrong implementation, or one that cannot
run, fails it and the other checks still run."""

import json

import pytest

import softmax_jax as sj
from softmax_jax import cli
from softmax_jax.verify import _comparisons


def test_verify_quick_passes_and_writes_json(tmp_path, capsys):
  path = tmp_path / "rows.json"
  assert cli.main(["verify", "--quick", "--json", str(path)]) == 0
  out = capsys.readouterr().out
  assert " 0 failed" in out and "passed" in out
  data = json.loads(path.read_text())
  ours = [r for r in data["rows"] if r["impl"] == "softmax_jax"]
  assert ours and all(r["status"] == "ok" for r in ours)
  assert {r["impl"] for r in data["rows"]} >= {"softmax_jax", "jax.nn", "optax"}
  assert {r["method"] for r in ours} >= {"value", "jacfwd", "jacrev", "grad", "fd", "hessian",
                                         "analytic"}
  assert {r["dtype"] for r in ours} == {"float64", "bfloat16"}
  assert {r["function"] for r in ours} >= set(_comparisons.CHECKS)


@pytest.mark.internals
def test_verify_fails_on_a_wrong_implementation(monkeypatch, capsys):
  monkeypatch.setattr(_comparisons, "softmax_jacobian", lambda z: sj.softmax_jacobian(z) * 1.01)
  code = cli.main(["verify", "--functions", "softmax", "--dtypes", "float32", "--classes", "10",
                   "--scales", "1"])
  out = capsys.readouterr().out
  assert code == 1
  assert "FAIL" in out and " 1 failed" in out


@pytest.mark.internals
def test_verify_reports_a_check_that_cannot_run_and_goes_on(monkeypatch, capsys, tmp_path):
  def broken(z):
    raise NotImplementedError("no kernel for this backend")

  monkeypatch.setattr(_comparisons, "softmax_jacobian", broken)
  path = tmp_path / "rows.json"
  code = cli.main(["verify", "--functions", "softmax,log_softmax", "--dtypes", "float32",
                   "--classes", "10", "--scales", "1", "--json", str(path)])
  out = capsys.readouterr().out
  assert code == 1
  assert "NotImplementedError: no kernel for this backend" in out and " 1 failed" in out
  rows = json.loads(path.read_text())["rows"]
  assert any(r["function"] == "log_softmax" and r["status"] == "ok" for r in rows)
