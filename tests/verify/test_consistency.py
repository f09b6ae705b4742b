"""vmap against a loop, jit against eager, second order against finite differences
(softmax_jax/verify/_batching.py, _second_order.py): each planted fault is caught and named, correct
functions raise no alarm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softmax_jax import log_softmax
from softmax_jax.losses import binary_cross_entropy
from softmax_jax.verify import _batching, _second_order
from softmax_jax.verify import _consistency as consistency

from _util import row_dot, squared_norm_jvp_batched_wrong

KEY = jax.random.key(3)
X = jnp.array([[0.5, -1.0, 2.0, 0.3], [0.1, 0.2, 3.0, -0.7]])


def run(fn, *args, modes=("fwd", "rev"), order=1, key=KEY):
  t = consistency.target(fn, args)
  checks = _batching.batching_and_jit_checks(t, modes, key)
  if order == 2:
    checks += _second_order.second_order_checks(t, modes, key)
  return {f"{c.mode} vs {c.reference}": c for c in checks}


def statuses(checks):
  return {name: c.status for name, c in checks.items()}


# ---------------------------------------------------------------------------
# Planted faults
# ---------------------------------------------------------------------------


def scaled_by_sum_vjp_batched_wrong(factor):
  """``x·Σx`` with a custom_vjp whose backward pass is off by ``factor`` under vmap."""
  dot = row_dot(factor)

  @jax.custom_vjp
  def scaled(x):
    return x * jnp.sum(x, -1, keepdims=True)

  def fwd(x):
    return scaled(x), x

  def bwd(x, u):  # uᵀJ = u Σx + ⟨u, x⟩ 1
    return (u * jnp.sum(x, -1, keepdims=True) + dot(u, x)[..., None],)

  scaled.defvjp(fwd, bwd)
  return scaled


@pytest.mark.parametrize(("factor", "size"), [(1.01, 4), (0.0, 4), (1.01, 4096)])
def test_a_wrong_batching_rule_of_a_jvp_is_caught_and_named(factor, size):
  x = jnp.resize(X[0], size)  # a 1 % error is caught in float32 at any size
  checks = run(squared_norm_jvp_batched_wrong(factor), x, modes=("fwd",))
  assert statuses(checks) == {"vmap(fwd) vs loop": "FAIL", "vmap(fwd, x fixed) vs loop": "FAIL",
                              "jit(fwd) vs eager": "ok"}
  bad = checks["vmap(fwd) vs loop"]
  assert bad.where.startswith("example ") and "output" in bad.where
  assert bad.max_rel_err == pytest.approx(abs(factor - 1), rel=1e-3)


def test_a_rule_wrong_only_for_an_unbatched_operand_is_caught_with_x_fixed():
  checks = run(squared_norm_jvp_batched_wrong(1.01, only_when_one_is_unbatched=True), X[0],
               modes=("fwd",))
  # batching points and directions together batches both operands of ⟨2x, v⟩; jax.jacfwd
  # batches v alone
  assert statuses(checks) == {"vmap(fwd) vs loop": "ok", "vmap(fwd, x fixed) vs loop": "FAIL",
                              "jit(fwd) vs eager": "ok"}


@pytest.mark.parametrize("columns", [4, 30000])  # 30000: compared on the device
def test_a_wrong_batching_rule_of_a_vjp_is_caught_at_its_leaf(columns):
  x = jnp.resize(X, (2, columns))
  checks = run(scaled_by_sum_vjp_batched_wrong(1.01), x, modes=("rev",))
  assert statuses(checks) == {"vmap(rev) vs loop": "FAIL", "vmap(rev, x fixed) vs loop": "FAIL",
                              "jit(rev) vs eager": "ok"}
  assert "args[0][" in checks["vmap(rev) vs loop"].where
  if columns == 4:
    assert checks["vmap(rev) vs loop"].bound < 1e-4  # a rounding-level bound in float32


@pytest.mark.parametrize("columns", [4, 30000])
def test_the_correct_batching_rule_passes(columns):
  checks = run(scaled_by_sum_vjp_batched_wrong(1.0), jnp.resize(X, (2, columns)), modes=("rev",))
  assert set(statuses(checks).values()) == {"ok"}


@pytest.mark.internals
@pytest.mark.parametrize("factor", [1.0, 1.01])
def test_device_and_host_comparisons_report_the_same(monkeypatch, factor):
  # one rule (_compare.entry_errors), two places it runs: the same checks either way
  x = {"a": jnp.resize(X, (2, 50)), "z": jnp.resize(X[0], (3,)) * (1 + 1j)}

  def fn(p):
    return scaled_by_sum_vjp_batched_wrong(factor)(p["a"]) * jnp.sum(jnp.abs(p["z"]))

  host = run(fn, x, modes=("rev",))
  monkeypatch.setattr(consistency, "DEVICE_MIN", 0)
  device = run(fn, x, modes=("rev",))
  for name, c in host.items():
    d = device[name]
    assert (d.passed, d.where, d.bound_rule) == (c.passed, c.where, c.bound_rule), name
    np.testing.assert_allclose([d.max_abs_err, d.max_rel_err, d.bound],
                               [c.max_abs_err, c.max_rel_err, c.bound], rtol=1e-12)
  assert all(c.passed for c in host.values()) == (factor == 1.0)


def test_a_second_check_of_the_same_function_compiles_nothing():
  fn = scaled_by_sum_vjp_batched_wrong(1.0)
  run(fn, X, modes=("fwd", "rev"))
  compiled = []
  jax.monitoring.register_event_duration_secs_listener(
      lambda event, *_, **__: compiled.append(event)
      if event == "/jax/core/compile/backend_compile_duration" else None)
  try:
    again = run(fn, X, modes=("fwd", "rev"))
  finally:
    jax.monitoring.clear_event_listeners()
  assert set(statuses(again).values()) <= {"ok", "unavailable"} and compiled == []


def sine_with_traced_branch_wrong():
  """``sin`` whose JVP rule, when its input is not concrete (traced by jit or vmap), takes a
  branch with a 1 % error in its derivative: right whenever it runs eagerly."""
  @jax.custom_jvp
  def sine(x):
    return jnp.sin(x)

  @sine.defjvp
  def _jvp(primals, tangents):
    (x,), (v,) = primals, tangents
    try:
      small = bool(jnp.all(jnp.abs(x) < 10.0))  # concrete: the exact derivative
    except jax.errors.ConcretizationTypeError:
      small = False
    derivative = jnp.cos(x) if small else 1.01 * jnp.cos(x)
    return jnp.sin(x), derivative * v

  return sine


def test_a_rule_wrong_only_when_traced_is_caught_by_jit_against_eager():
  checks = run(sine_with_traced_branch_wrong(), X)
  # fwd and rev (the transposed JVP) both run the rule; the loop and the batch are both
  # compiled, so they agree, and only the eager run sees concrete values
  assert statuses(checks) == {
      "vmap(fwd) vs loop": "ok", "vmap(fwd, x fixed) vs loop": "ok", "jit(fwd) vs eager": "FAIL",
      "vmap(rev) vs loop": "ok", "vmap(rev, x fixed) vs loop": "ok", "jit(rev) vs eager": "FAIL"}
  assert checks["jit(fwd) vs eager"].max_rel_err == pytest.approx(0.01, rel=1e-2)
  assert checks["jit(fwd) vs eager"].where.startswith("output[")
  assert checks["jit(rev) vs eager"].where.startswith("args[0][")


def sine_with_frozen_derivative():
  """``sin`` whose JVP rule is right to first order but is constant in ``x`` (a
  ``stop_gradient`` too many): its second derivative is 0 instead of ``−sin``."""
  @jax.custom_jvp
  def sine(x):
    return jnp.sin(x)

  @sine.defjvp
  def _jvp(primals, tangents):
    (x,), (v,) = primals, tangents
    return jnp.sin(x), jnp.cos(jax.lax.stop_gradient(x)) * v

  return sine


def test_a_wrong_second_derivative_is_caught_by_both_second_order_modes():
  checks = run(sine_with_frozen_derivative(), X, order=2)
  assert checks["vmap(fwd) vs loop"].passed and checks["jit(rev) vs eager"].passed
  assert checks["fwd-over-rev vs fd"].status == "FAIL"
  assert checks["rev-over-rev vs fd"].status == "FAIL"
  assert checks["fwd-over-rev vs rev-over-rev"].status == "ok"  # they agree: both are wrong
  assert checks["fwd-over-rev vs fd"].where.startswith("args[0][")


def test_a_one_percent_second_derivative_error_is_caught_in_float32():
  @jax.custom_jvp
  def cube(x):
    return x ** 3

  @cube.defjvp
  def _jvp(primals, tangents):  # d x³ = 3x² v, written so its own derivative is 1 % off
    (x,), (v,) = primals, tangents
    x_off = jax.lax.stop_gradient(x) * -0.01 + 1.01 * x  # the value of x, 1.01 its derivative
    return cube(x), 3 * x * x_off * v

  checks = run(cube, X + 2.0, modes=("rev",), order=2)
  assert checks["rev-over-rev vs fd"].status == "FAIL"
  assert 0.003 < checks["rev-over-rev vs fd"].max_rel_err < 0.01


# ---------------------------------------------------------------------------
# Unavailable modes, arguments, names
# ---------------------------------------------------------------------------


def test_forward_mode_of_a_custom_vjp_is_reported_unavailable_not_raised():
  @jax.custom_vjp
  def sine(x):
    return jnp.sin(x)

  sine.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (jnp.cos(x) * g,))
  checks = run(sine, X, order=2)
  assert checks["vmap(fwd) vs loop"].status == "unavailable"
  assert "custom_vjp" in checks["jit(fwd) vs eager"].note
  assert checks["vmap(rev) vs loop"].passed and checks["rev-over-rev vs fd"].passed
  assert checks["fwd-over-rev vs fd"].passed  # jvp of the gradient runs the bwd rule


def test_reverse_over_reverse_through_a_rule_without_transpose_is_unavailable():
  checks = run(scaled_by_sum_vjp_batched_wrong(1.0), X, modes=("rev",), order=2)
  assert checks["rev-over-rev vs fd"].status == "unavailable"
  assert "reverse-mode" in checks["rev-over-rev vs fd"].note  # custom_vmap has no transpose
  assert checks["vmap(rev) vs loop"].passed


def test_a_mode_without_a_batching_rule_is_unavailable():
  @jax.custom_jvp
  def host_sine(x):  # computed on the host: no batching rule
    return jax.pure_callback(np.sin, jax.ShapeDtypeStruct(x.shape, x.dtype), x)

  @host_sine.defjvp
  def _jvp(primals, tangents):
    (x,), (v,) = primals, tangents
    return host_sine(x), jnp.cos(x) * v

  checks = run(host_sine, X, modes=("fwd",))
  # batching the directions alone leaves the callback unbatched: that one runs
  assert statuses(checks) == {"vmap(fwd) vs loop": "unavailable",
                              "vmap(fwd, x fixed) vs loop": "ok", "jit(fwd) vs eager": "ok"}
  assert "vmap" in checks["vmap(fwd) vs loop"].note


def test_integer_and_static_arguments_are_held_fixed_and_paths_name_the_leaf():
  def loss(params, labels, reduction):
    picked = jnp.take_along_axis(jnp.tanh(params["w"] * X), labels[:, None], 1)
    return {"sum": jnp.sum, "mean": jnp.mean}[reduction](picked)

  checks = run(loss, {"w": jnp.full((2, 4), 0.5)}, jnp.array([2, 0]), "sum")
  assert all(c.passed for c in checks.values()), checks
  assert checks["vmap(rev) vs loop"].where.split(": ")[1].startswith("args[0]['w'][")


def test_nothing_to_differentiate_is_one_line_naming_args():
  with pytest.raises(ValueError, match="args has no floating-point or complex leaf"):
    consistency.target(lambda i: i * 2, (jnp.arange(3),))


def test_integer_outputs_are_one_line_naming_the_output():
  with pytest.raises(ValueError, match=r"fn\(\*args\)\[1\] has dtype int32"):
    consistency.target(lambda x: (x, jnp.argmax(x)), (X,))


# ---------------------------------------------------------------------------
# No false alarm on correct functions
# ---------------------------------------------------------------------------


def test_the_package_log_softmax_and_binary_cross_entropy_raise_no_alarm():
  # bfloat16 and float64 are run end to end in test_check_derivatives.py
  checks = run(log_softmax, X * 4, order=2)  # a saturated row too: 12 − (−2.8)
  checks |= {"bce " + k: c for k, c in run(binary_cross_entropy, X, (X > 0) * 1.0).items()}
  assert all(c.passed for c in checks.values()), [str(c) for c in checks.values()]


def test_complex_inputs_are_compared_by_real_and_imaginary_parts():
  z = jnp.array([1.0 + 2.0j, -0.5 + 0.1j, 0.3 - 1.0j], jnp.complex64)
  checks = run(lambda a: jnp.sin(a) * jnp.conj(a), z, order=2)
  first = {n: c.status for n, c in checks.items() if "over" not in n}
  assert len(first) == 6 and set(first.values()) == {"ok"}
  assert checks["fwd-over-rev vs fd"].status == "unavailable"  # said so, not raised
  where = consistency.where_of(jax.ShapeDtypeStruct((3,), jnp.complex64), "output")
  assert [where(i) for i in (0, 1, 5)] == ["output[0].real", "output[0].imag", "output[2].imag"]


def test_the_copies_are_distinct_examples_with_the_signs_of_x():
  copies = consistency.perturbed_copies(KEY, {"w": X}, 3)
  assert copies[0]["w"] is X
  for c in copies[1:]:
    assert np.all(np.sign(c["w"]) == np.sign(X)) and not np.allclose(c["w"], X)


def test_second_order_needs_no_batching_rule():
  @jax.custom_jvp
  def host_sine(x):  # computed on the host: jax.vmap of it raises
    return jax.pure_callback(np.sin, jax.ShapeDtypeStruct(x.shape, x.dtype), x)

  @host_sine.defjvp
  def _jvp(primals, tangents):
    (x,), (v,) = primals, tangents
    return host_sine(x), jnp.cos(x) * v

  t = consistency.target(host_sine, (X,))
  checks = {c.name: c for c in _second_order.second_order_checks(t, ("rev",), KEY)}
  assert checks["rev-over-rev vs fd"].passed  # the differences of ∇s ran without vmap
