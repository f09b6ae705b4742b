"""softmax_jax.verify and `softmax-jax verify`: they pass right answers and fail wrong ones."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softmax_jax as sj
from softmax_jax import _suite, cli
from softmax_jax.verify import check_grad, check_jacobian, check_jvp, check_vjp


@pytest.fixture
def x(rng):
  return jnp.asarray(rng.normal(size=(3, 5)) * 2, jnp.float32)


def test_right_jacobian_passes_every_method(x):
  result = check_jacobian(sj.softmax, sj.softmax_jacobian, x, batch_dims=1)
  assert result.passed, str(result)
  assert [e.method for e in result.errors] == ["jacfwd", "jacrev", "fd"]
  assert result.shape == (3, 5, 5)
  assert "PASSED" in str(result)
  # one example, no batch axis; and a jitted jac_fn
  assert check_jacobian(sj.softmax, jax.jit(sj.softmax_jacobian), x[0]).passed


def test_transposed_non_symmetric_jacobian_fails(x):
  # the Jacobian of log_softmax, I − 1 yᵀ, is not symmetric: its transpose is wrong
  def analytic(z):
    y = sj.softmax(z)
    return jnp.eye(z.shape[-1]) - y[..., None, :]
  assert check_jacobian(sj.log_softmax, analytic, x, batch_dims=1).passed
  wrong = check_jacobian(sj.log_softmax, lambda z: jnp.swapaxes(analytic(z), -1, -2), x,
                         batch_dims=1)
  assert not wrong.passed
  assert all(not e.passed for e in wrong.errors)
  assert wrong["jacfwd"].max_abs_err > 0.1
  assert "FAILED" in str(wrong) and "FAIL" in str(wrong["fd"])


def test_jacobian_off_by_a_scale_fails_and_names_the_worst_entry(x):
  result = check_jacobian(sj.softmax, lambda z: sj.softmax_jacobian(z) * 1.001, x, batch_dims=1)
  assert not result.passed
  b, i, j = result["jacrev"].worst_index
  full = np.asarray(sj.softmax_jacobian(x))
  assert abs(full[b, i, j]) == pytest.approx(np.max(np.abs(full)))  # the largest entry
  assert result["jacrev"].max_rel_err == pytest.approx(1e-3, rel=1e-2)


def test_pytree_inputs():
  params = {"w": jnp.ones((2, 3)) * 0.3, "b": jnp.array([0.1, -0.2])}

  def f(p):
    return sj.softmax(p["w"] @ jnp.arange(3.0) + p["b"])

  result = check_jacobian(f, jax.jacrev(f), params)
  assert result.passed, str(result)

  def wrong(p):
    jac = jax.jacrev(f)(p)
    return {"w": jac["w"], "b": -jac["b"]}

  bad = check_jacobian(f, wrong, params)
  assert not bad.passed and "['b']" in str(bad["jacfwd"].worst_index)


def test_bad_arguments_raise_value_error_naming_shapes(x):
  with pytest.raises(ValueError, match=r"jac_fn\(x\) has shape \(3, 5\) but jax.jacfwd\(fn\)\(x\) "
                     r"has shape \(3, 5, 3, 5\)"):
    check_jacobian(sj.softmax, sj.softmax, x)
  with pytest.raises(ValueError, match=r"x has dtype int32 and shape \(3,\)"):
    check_jacobian(sj.softmax, sj.softmax_jacobian, jnp.arange(3, dtype=jnp.int32))
  with pytest.raises(ValueError, match="unknown methods"):
    check_jacobian(sj.softmax, sj.softmax_jacobian, x, methods=("magic",))
  with pytest.raises(ValueError, match="must be a scalar"):
    check_grad(sj.softmax, sj.softmax, x)


def test_check_grad(x):
  labels = jnp.array([0, 4, 2])
  t = jax.nn.one_hot(labels, 5, dtype=x.dtype)
  loss = lambda z: sj.cross_entropy_with_integer_labels(z, labels, reduction="sum")  # noqa: E731
  assert check_grad(loss, lambda z: sj.cross_entropy_grad(z, t), x).passed
  missing_t = check_grad(loss, lambda z: sj.softmax(z), x)  # forgot − t
  assert not missing_t.passed and missing_t["grad"].max_abs_err > 0.5


def test_check_jvp_and_vjp(x, rng):
  v = jnp.asarray(rng.normal(size=x.shape), x.dtype)
  assert check_jvp(sj.softmax, sj.softmax_jvp, x, v).passed
  assert check_vjp(sj.softmax, sj.softmax_vjp, x, v).passed
  sloppy = lambda z, v: sj.softmax(z) * v  # drops −⟨y, v⟩  # noqa: E731
  assert not check_jvp(sj.softmax, sloppy, x, v).passed
  assert not check_vjp(sj.softmax, sloppy, x, v).passed
  with pytest.raises(ValueError, match=r"tangent has shape \(5,\) but x has shape \(3, 5\)"):
    check_jvp(sj.softmax, sj.softmax_jvp, x, v[0])


def test_tolerance_follows_dtype(x):
  r32 = check_jacobian(sj.softmax, sj.softmax_jacobian, x, batch_dims=1, methods=("jacrev",))
  xb = x.astype(jnp.bfloat16)
  rb = check_jacobian(sj.softmax, sj.softmax_jacobian, xb, batch_dims=1, methods=("jacrev",))
  assert rb.passed and rb.dtype == "bfloat16"
  assert rb["jacrev"].rtol > 1000 * r32["jacrev"].rtol


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


def test_verify_fails_on_a_wrong_implementation(monkeypatch, capsys):
  monkeypatch.setattr(_suite, "softmax_jacobian", lambda z: sj.softmax_jacobian(z) * 1.01)
  code = cli.main(["verify", "--functions", "softmax", "--dtypes", "float32", "--classes", "10",
                   "--scales", "1"])
  out = capsys.readouterr().out
  assert code == 1
  assert "FAIL" in out and " 1 failed" in out


def test_verify_reports_a_check_that_cannot_run_and_goes_on(monkeypatch, capsys, tmp_path):
  def broken(z):
    raise NotImplementedError("no kernel for this backend")

  monkeypatch.setattr(_suite, "softmax_jacobian", broken)
  path = tmp_path / "rows.json"
  code = cli.main(["verify", "--functions", "softmax,log_softmax", "--dtypes", "float32",
                   "--classes", "10", "--scales", "1", "--json", str(path)])
  out = capsys.readouterr().out
  assert code == 1
  assert "NotImplementedError: no kernel for this backend" in out and " 1 failed" in out
  rows = json.loads(path.read_text())["rows"]
  assert any(r["function"] == "log_softmax" and r["status"] == "ok" for r in rows)
