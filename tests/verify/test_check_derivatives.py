"""check_derivatives and assert_derivatives (softmax_jax/verify/_check_derivatives.py):
every mode in one call, each planted fault named, no false alarm, one-line argument errors,
and the example test file of the docs run by pytest."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from softmax_jax import log_softmax, softmax
from softmax_jax.losses import cross_entropy_with_integer_labels
from softmax_jax.verify import DerivativeReport, assert_derivatives, check_derivatives

from _util import squared_norm_jvp_batched_wrong

ROOT = Path(__file__).resolve().parents[2]
X = jnp.array([[0.5, -1.0, 2.0, 0.3], [0.1, 0.2, 3.0, -0.7]])
ALL = ["fwd vs fd", "rev vs fd", "rev vs fwd", "vmap(fwd) vs loop", "vmap(fwd, x fixed) vs loop",
       "jit(fwd) vs eager", "vmap(rev) vs loop", "vmap(rev, x fixed) vs loop", "jit(rev) vs eager",
       "fwd-over-rev vs fd", "rev-over-rev vs fd", "fwd-over-rev vs rev-over-rev"]


def names(report, status=None):
  return [c.name for c in report.checks if status is None or c.status == status]


@pytest.fixture(scope="module")
def log_softmax_report():
  with jax.enable_x64(False):
    return check_derivatives(log_softmax, X * 4, order=2)  # a saturated row: 12 − (−2.8)


def test_every_mode_of_the_package_log_softmax_passes_in_float32(log_softmax_report):
  r = log_softmax_report
  assert isinstance(r, DerivativeReport) and r.passed, str(r)
  assert names(r) == ALL and names(r, "ok") == ALL
  assert r.fast is False and set(r.jacobian_errors) >= {"fwd vs fd", "rev vs fd"}
  assert str(r).splitlines()[0] == ("check_derivatives(log_softmax) at ((2, 4) float32), "
                                    "order 2, full Jacobians: PASSED (12 checks ran, 0 failed)")


def test_a_full_jacobian_report_draws_its_errors(log_softmax_report, tmp_path):
  pytest.importorskip("matplotlib")
  log_softmax_report.plot(tmp_path / "errors.png")
  assert (tmp_path / "errors.png").stat().st_size > 1000


def test_bfloat16_loss_with_integer_labels_raises_no_alarm():
  r = check_derivatives(cross_entropy_with_integer_labels, (X * 3).astype(jnp.bfloat16),
                        jnp.array([2, 0]))
  assert r.passed, str(r)
  assert names(r, "ok") == ALL[:9]
  assert "ε = 7.8e-03" in r["vmap(rev) vs loop"].bound_rule  # the bfloat16 bound, documented


@pytest.mark.x64
def test_float64_pytree_function_raises_no_alarm():
  def fn(params, x):
    return {"y": softmax(params["w"] @ x), "norm": jnp.sum(params["b"] ** 2)}

  params = {"w": jnp.linspace(-1.0, 1.0, 8).reshape(2, 4), "b": jnp.array([0.5, -2.0])}
  r = check_derivatives(fn, params, jnp.asarray(X[0], jnp.float64))
  assert r.passed, str(r)
  assert "float64" in r.inputs and r["jit(rev) vs eager"].bound < 1e-12


def batching_wrong_square():
  """``Σ x²`` per row with a custom_jvp whose batched dot product is 1 % off."""
  return squared_norm_jvp_batched_wrong(1.01)


def test_a_wrong_batching_rule_is_named_and_jit_is_cleared():
  r = check_derivatives(batching_wrong_square(), X[0], modes=("fwd",))
  # the first-order checks build J v for many v at once with jax.vmap (as jax.jacfwd
  # does), so they see the batching rule too; vmap against the loop and jit against eager
  # say it is the batching and not the rule itself
  assert r["vmap(fwd) vs loop"].status == "FAIL" and r["jit(fwd) vs eager"].status == "ok"
  assert r["vmap(fwd) vs loop"].max_rel_err == pytest.approx(0.01, rel=1e-2)
  assert r["vmap(fwd) vs loop"].where.startswith("example ")


def one_percent_softplus():
  @jax.custom_jvp
  def softplus(x):
    return jnp.logaddexp(x, 0.0)

  @softplus.defjvp
  def _jvp(primals, tangents):
    (x,), (v,) = primals, tangents
    return softplus(x), 1.01 * jax.nn.sigmoid(x) * v  # 1 % too large

  return softplus


def test_a_one_percent_rule_error_is_caught_in_float32_at_a_size_that_picks_fast_mode():
  x = jnp.linspace(-4.0, 4.0, 1100)  # a 1100 × 1100 Jacobian: fast=None picks projections
  with pytest.raises(AssertionError) as raised:
    assert_derivatives(one_percent_softplus(), x)
  message = str(raised.value)
  lines = message.splitlines()
  assert lines[0].startswith("check_derivatives(softplus) at ((1100,) float32), order 1, "
                             "fast mode (random projections): FAILED")
  failed = {tuple(line.split()[1:3]) for line in lines[2:] if line.split()[0] == "FAIL"}
  assert failed == {("fwd", "fd"), ("rev", "fd")}  # the rule itself; vmap and jit agree with it


def test_forward_mode_of_a_custom_vjp_is_reported_unavailable():
  @jax.custom_vjp
  def sine(x):
    return jnp.sin(x)

  sine.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (jnp.cos(x) * g,))
  r = check_derivatives(sine, X)
  assert r.passed, str(r)
  assert {"vmap(fwd) vs loop", "vmap(fwd, x fixed) vs loop", "jit(fwd) vs eager",
          "fwd vs fd"} <= set(names(r, "unavailable"))
  assert names(r, "ok")[:1] == ["rev vs fd"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"order": 3}, "check_derivatives: order must be 1 or 2, got 3."),
    ({"modes": ("fwd", "sideways")}, "check_derivatives: modes must be a non-empty subset of "
                                     "('fwd', 'rev'), got ('fwd', 'sideways')."),
    ({"modes": ()}, "check_derivatives: modes must be a non-empty subset"),
    ({"fast": "yes"}, "check_derivatives: fast must be None, True or False, got 'yes'."),
    ({"projections": 0}, "check_derivatives: projections must be an integer ≥ 1, got 0."),
    ({"batch_size": 1}, "check_derivatives: batch_size must be an integer ≥ 2, got 1."),
    ({"consistency": "no"}, "check_derivatives: consistency must be True or False, got 'no'."),
])
def test_a_wrong_argument_is_one_line_naming_it(kwargs, message):
  with pytest.raises(ValueError) as raised:
    check_derivatives(softmax, X, **kwargs)
  assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_consistency_false_runs_the_first_order_checks_alone():
  r = check_derivatives(softmax, X, consistency=False)
  assert names(r) == ALL[:3] and r.passed
  assert names(check_derivatives(softmax, X, consistency=False, order=2)) == ALL[:3] + ALL[9:]


def test_missing_function_or_point_is_named():
  with pytest.raises(TypeError, match="check_derivatives: fn must be callable, got Array."):
    assert_derivatives(X, X)
  with pytest.raises(ValueError, match="check_derivatives: no args"):
    check_derivatives(softmax)


def test_the_documented_example_test_file_passes_under_pytest():
  example = ROOT / "docs" / "examples" / "test_my_derivatives.py"
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                         "--rootdir", str(example.parent), "-c", os.devnull, str(example)],
                        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
  assert "3 passed" in done.stdout
