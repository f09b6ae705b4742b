"""first_order_checks: forward mode, reverse mode and float64 central differences by random
projections (fast mode) or full Jacobians; planted bugs are caught and named, correct
derivatives (this package's own among them) raise no false alarm."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import softmax_jax as sj
from softmax_jax import losses
from softmax_jax.verify import _complex
from softmax_jax.verify import _finite_differences as fd
from softmax_jax.verify import _projections as proj
from softmax_jax.verify._projections import FirstOrder, first_order_checks
from softmax_jax.verify._tolerances import traced_term_magnitude


def by_pair(result: FirstOrder) -> dict:
  return {(c.mode, c.reference): c for c in result.checks}


def assert_all_pass(result: FirstOrder):
  for c in result.checks:
    assert c.passed, c


@pytest.fixture
def z(rng):
  return jnp.asarray(rng.normal(size=(3, 7)) * 2, jnp.float32)


def _package_functions(rng, dtype=jnp.float32):
  """softmax, log_softmax, cross_entropy, the integer-label loss and linear_cross_entropy, as
  one function of one tuple of arguments (one check covers them all)."""
  z = jnp.asarray(rng.normal(size=(3, 7)) * 2, dtype)
  t = jax.nn.softmax(jnp.asarray(rng.normal(size=(3, 7)), jnp.float32)).astype(dtype)
  labels = jnp.asarray(rng.integers(0, 7, 3))
  h = jnp.asarray(rng.normal(size=(5, 4)), dtype)
  w = jnp.asarray(rng.normal(size=(4, 9)), dtype)
  y = jnp.asarray(rng.integers(0, 9, 5))

  def fn(z, t, labels, h, w, y):
    return {"softmax": sj.softmax(z), "log_softmax": sj.log_softmax(z),
            "cross_entropy": losses.cross_entropy(z, t),
            "integer_labels": losses.cross_entropy_with_integer_labels(z, labels),
            "linear": losses.linear_cross_entropy(h, w, y, chunk_size=4)}
  return fn, (z, t, labels, h, w, y)


@pytest.mark.parametrize("fast", [True, False])
def test_package_functions_pass_in_float32(rng, fast):
  fn, args = _package_functions(rng)
  if not fast:  # a smaller Jacobian: no linear_cross_entropy
    fn = lambda z, t, labels, _f=fn, _a=args: _f(z, t, labels, *_a[3:])  # noqa: E731
    args = args[:3]
  result = first_order_checks(fn, args, fast=fast)
  pairs = by_pair(result)
  assert not jax.config.jax_enable_x64  # the float64 of the differences did not leak
  assert set(pairs) == {("fwd", "fd"), ("rev", "fd"), ("rev", "fwd")}
  assert_all_pass(result)
  assert (result.jacobian_errors is None) == fast
  if fast:
    assert pairs["rev", "fd"].where.startswith("projection")
    assert "catch a relative error" in pairs["rev", "fd"].note
  else:  # 3·7 + 3·7 + 1 + 1 + 1 outputs, 21 + 21 inputs (labels held constant; h, w fixed)
    assert result.jacobian_errors["rev vs fd"].shape == (45, 42)


def test_a_scalar_loss_of_a_pytree_passes(rng):
  p = {"a": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
       "b": jnp.asarray(rng.normal(size=(4, 2)), jnp.float32)}
  assert_all_pass(first_order_checks(lambda p: jnp.tanh(p["a"] @ p["b"]).sum(), (p,)))


@pytest.mark.x64
def test_package_functions_pass_in_float64(rng):
  z, t, labels = _package_functions(rng, jnp.float64)[1][:3]
  fn = lambda z, t, labels: (sj.log_softmax(z), losses.cross_entropy(z, t),  # noqa: E731
                             losses.cross_entropy_with_integer_labels(z, labels))
  assert_all_pass(first_order_checks(fn, (z, t, labels), fast=True))


def test_package_functions_pass_in_bfloat16(rng):
  fn, args = _package_functions(rng, jnp.bfloat16)
  result = first_order_checks(lambda z, t, *_: sj.softmax(z), args[:2] + args[2:], fast=True)
  assert_all_pass(result)
  note = by_pair(result)["rev", "fd"].note  # its own, looser bound for bfloat16 rounding
  assert "if only in bfloat16" in note


def _mlp(widths, seed=0, batch=4):
  key = jax.random.key(seed)
  params = []
  for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
    params.append({"w": jax.random.normal(jax.random.fold_in(key, i), (a, b)) / np.sqrt(a),
                   "b": 0.1 * jax.random.normal(jax.random.fold_in(key, 50 + i), (b,))})
  x = jax.random.normal(jax.random.fold_in(key, 99), (batch, widths[0]))
  y = jax.random.randint(jax.random.fold_in(key, 98), (batch,), 0, widths[-1])
  return params, x, y


@jax.custom_vjp
def _one_percent_more(w):
  return w


_one_percent_more.defvjp(lambda w: (w, None), lambda _, g: (1.01 * g,))


def _mlp_loss(x, y, planted=None):
  def loss(params):
    h = x
    for i, layer in enumerate(params):
      h = h @ (_one_percent_more(layer["w"]) if i == planted else layer["w"]) + layer["b"]
      h = jnp.tanh(h) if i < len(params) - 1 else h
    return jnp.mean(losses.cross_entropy_with_integer_labels(h, y))
  return loss


def test_planted_one_percent_in_one_layer_is_caught_and_named():
  params, x, y = _mlp((4, 8, 8, 3))
  right = first_order_checks(_mlp_loss(x, y), (params,), modes=("rev",), fast=True)
  assert_all_pass(right)
  for layer in (1,):
    wrong = first_order_checks(_mlp_loss(x, y, layer), (params,), modes=("rev",), fast=True)
    (check,) = wrong.checks
    assert check.passed is False
    assert check.where.endswith(f"on [0][{layer}]['w']"), check.where
    assert check.max_abs_err > check.bound


def _wrong_forward_sin():
  """sin with a JVP 1 % too large; its VJP (the transpose, ``transpose_solve``) is right."""
  @jax.custom_jvp
  def f(x):
    return jnp.sin(x)

  @f.defjvp
  def _(primals, tangents):
    (x,), (dx,) = primals, tangents
    c = jnp.cos(x)
    return jnp.sin(x), lax.custom_linear_solve(
        lambda t: t / c, dx, solve=lambda _, b: 1.01 * c * b, transpose_solve=lambda _, b: c * b)
  return f


@pytest.mark.parametrize("fast", [True])
def test_wrong_only_in_forward_mode(z, fast):
  f = _wrong_forward_sin()
  pairs = by_pair(first_order_checks(lambda p: (f(p["a"]), f(p["b"])), ({"a": z, "b": z[0]},),
                                     fast=fast))
  assert pairs["rev", "fd"].passed
  assert pairs["fwd", "fd"].passed is False
  assert pairs["rev", "fwd"].passed is False  # the dot-product test sees the two disagree
  if fast:
    assert "on [0]['" in pairs["fwd", "fd"].where and "output" in pairs["fwd", "fd"].where


def _transposed_matmul(a):
  @jax.custom_vjp
  def f(x):
    return a @ x
  f.defvjp(lambda x: (a @ x, None), lambda _, u: (a @ u,))  # should be aᵀ u
  return f


@pytest.mark.parametrize("fast", [True, False])
def test_transposed_rule_is_caught_and_forward_mode_reported_unavailable(rng, fast):
  a = jnp.asarray(rng.normal(size=(4, 4)), jnp.float32)
  x = jnp.asarray(rng.normal(size=(4,)), jnp.float32)
  c = jnp.ones(3)
  result = first_order_checks(lambda c, x: c.sum() + _transposed_matmul(a)(x), (c, x), fast=fast)
  pairs = by_pair(result)
  assert pairs["fwd", "fd"].passed is None and "custom_vjp" in pairs["fwd", "fd"].note
  assert pairs["rev", "fwd"].passed is None
  assert pairs["rev", "fd"].passed is False
  assert "[1]" in pairs["rev", "fd"].where  # x, not c
  assert first_order_checks(lambda x: a @ x, (x,), fast=fast).checks[1].passed


def _off_for_negative_inputs():
  @jax.custom_jvp
  def f(x):
    return jnp.sin(x)
  f.defjvp(lambda p, t: (jnp.sin(p[0]), (jnp.cos(p[0]) + 1e-3 * (p[0] < 0)) * t[0]))
  return f


@pytest.mark.parametrize("fast", [True, False])
def test_off_by_1e3_for_negative_inputs_only(z, fast):
  f = _off_for_negative_inputs()
  pairs = by_pair(first_order_checks(f, (z,), fast=fast))
  assert pairs["fwd", "fd"].passed is False and pairs["rev", "fd"].passed is False
  assert pairs["rev", "fwd"].passed  # consistent with each other, both wrong
  assert by_pair(first_order_checks(f, (jnp.abs(z) + 0.1,), fast=fast))["fwd", "fd"].passed
  if not fast:  # the worst entry is on the diagonal at a negative input
    where = pairs["fwd", "fd"].where
    i, j = (tuple(int(a) for a in part.split("[")[-1].rstrip("]").split(", "))
            for part in where.split(" wrt "))
    assert i == j and z[i] < 0


def test_full_mode_too_large_suggests_fast_mode_and_auto_picks_it(monkeypatch):
  x = jnp.ones((40,))
  monkeypatch.setattr(proj, "FULL_MAX", 100)
  with pytest.raises(ValueError, match=r"40 × 40 = 1600 entries.*fast=True"):
    first_order_checks(jnp.sin, (x,), fast=False)
  assert first_order_checks(jnp.sin, (x,)).jacobian_errors is None  # fast=None: fast
  small = first_order_checks(jnp.sin, (x[:5],))
  assert set(small.jacobian_errors) == {"fwd vs fd", "rev vs fd", "rev vs fwd"}
  assert small.jacobian_errors["fwd vs fd"].shape == (5, 5)


def test_arguments_are_checked(z):
  with pytest.raises(ValueError, match="modes"):
    first_order_checks(sj.softmax, (z,), modes=("jvp",))
  with pytest.raises(ValueError, match="projections"):
    first_order_checks(sj.softmax, (z,), projections=0)
  with pytest.raises(ValueError, match="args must be a tuple"):
    first_order_checks(sj.softmax, z)
  with pytest.raises(ValueError, match="no floating-point"):
    first_order_checks(lambda i: i * 1.0, (jnp.arange(3),))


def test_reproducible_and_keyed(z):
  f = lambda a: jnp.sum(jnp.sin(a) * a)  # noqa: E731
  one = first_order_checks(f, (z,), fast=True)
  assert one == first_order_checks(f, (z,), fast=True)
  other = first_order_checks(f, (z,), fast=True, key=jax.random.key(7), projections=5)
  assert other.checks[0].max_abs_err != one.checks[0].max_abs_err
  assert "5 projections" in by_pair(other)["rev", "fd"].note


def test_miss_probability_and_its_t():
  for k in (1, 3, 5):
    t = _complex.t_for_miss(0.01, k)
    assert math.erf(t / math.sqrt(2)) ** k == pytest.approx(0.01, rel=1e-6)
  # K = 1: a projection misses an error of size σ within ±0.0125σ with probability 1 %
  assert _complex.t_for_miss(0.01, 1) == pytest.approx(0.012533, rel=1e-3)


def test_fast_differences_without_richardson_agree():
  with fd.float64_enabled():
    x, v = jnp.array([0.3, -1.2]), jnp.array([1.0, 0.5])
    full = fd.central_difference(jnp.sin, x, v)
    half = fd.central_difference(jnp.sin, x, v, richardson=False)
    np.testing.assert_allclose(half.value, full.value, rtol=1e-9)
    assert np.all(half.error <= full.error)
    np.testing.assert_allclose(full.value, np.cos(np.asarray(x)) * np.asarray(v), rtol=1e-9)


@pytest.mark.internals
def test_traced_term_magnitude_through_a_platform_cond(z):
  # under jit, softmax's platform switch is a cond: Σ|terms| now passes through it
  def program(x, v):
    _, lin = jax.linearize(sj.softmax, x)
    return traced_term_magnitude(lin, v).magnitude

  m = jax.jit(program)(z, jnp.ones_like(z))
  y = np.asarray(sj.softmax(z), np.float64)
  np.testing.assert_allclose(np.asarray(m), 2 * y, rtol=1e-5)  # y·|v| + y·⟨y, |v|⟩


def test_a_second_check_of_the_same_function_traces_nothing(z):
  traces = []

  def f(a):
    traces.append(1)  # runs only while JAX traces f
    return jnp.sum(jnp.tanh(a) ** 2)

  first = first_order_checks(f, (z,), fast=True)
  assert traces and all(c.passed for c in first.checks)
  traces.clear()
  assert first_order_checks(f, (z,), fast=True) == first
  assert traces == []
  first_order_checks(f, (z[:2],), fast=True)  # new shapes: traced again
  assert traces


class _Unhashable:
  __hash__ = None  # a callable object the checks' caches cannot key on

  def __call__(self, a):
    return jnp.sin(a) * a


@pytest.mark.parametrize("fast", [True, False])
def test_an_unhashable_callable_is_checked_uncached(z, fast):
  result = first_order_checks(_Unhashable(), (z,), fast=fast)
  assert [c.passed for c in result.checks] == [True, True, True]


def test_scalar_and_vector_outputs_check_the_same_gradient(z):
  # a scalar output takes one unbatched VJP; a [1]-shaped one a vmap over K cotangents
  f = lambda a: jnp.sum(jnp.sin(a) * a)  # noqa: E731
  scalar = by_pair(first_order_checks(f, (z,), fast=True))
  vector = by_pair(first_order_checks(lambda a: f(a)[None], (z,), fast=True))
  assert scalar["rev", "fd"].passed and vector["rev", "fd"].passed
  bad = lambda a: f(a) + 1e-3 * jnp.sum(lax.stop_gradient(a) - a)  # noqa: E731 - grad off by 1e-3
  for g in (bad, lambda a: bad(a)[None]):
    assert by_pair(first_order_checks(g, (z,), fast=True, modes=("rev",)))["rev", "fd"].passed \
        is False


@pytest.mark.parametrize("fast", [True, False])
def test_the_error_reported_is_the_one_its_bound_is_for(z, fast):
  f = lambda a: jnp.sum(jnp.sin(a) * a)  # noqa: E731
  bad = lambda a: f(a) + 1e-3 * jnp.sum(lax.stop_gradient(a) - a)  # noqa: E731
  for c in first_order_checks(f, (z,), fast=fast).checks:
    assert 0 <= c.error <= c.bound, c
  failed = by_pair(first_order_checks(bad, (z,), fast=fast, modes=("rev",)))["rev", "fd"]
  assert failed.error > failed.bound
