"""softmax, log_softmax, logsumexp and the logistic function."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import softmax_jax as sj

import reference as ref
from _util import DTYPES, TRANSFORMS, assert_close, f64, logits, matrix

SHAPES_AXES = [((7,), -1), ((4, 5), -1), ((4, 5), 0), ((2, 3, 6), 1), ((2, 3, 6), (1, 2))]


@pytest.mark.parametrize("shape_axis,dtype,transform",
                         matrix(SHAPES_AXES, DTYPES, list(TRANSFORMS)))
def test_values_match_float64_reference(rng, shape_axis, dtype, transform):
  shape, axis = shape_axis
  x = logits(rng, shape, dtype)
  ax = axis
  y = TRANSFORMS[transform](lambda x: sj.softmax(x, axis))(x)
  ly = TRANSFORMS[transform](lambda x: sj.log_softmax(x, axis))(x)
  lse = TRANSFORMS[transform](lambda x: sj.logsumexp(x, axis))(x)
  assert y.dtype == dtype and ly.dtype == dtype and lse.dtype == dtype
  if isinstance(axis, tuple):  # reference over a flattened pair of axes
    xf = np.moveaxis(f64(x), axis, (-2, -1)).reshape(x.shape[0], -1)
    want = ref.softmax(xf).reshape(np.moveaxis(f64(x), axis, (-2, -1)).shape)
    assert_close(np.moveaxis(f64(y), axis, (-2, -1)), want, dtype)
    assert_close(lse, ref.logsumexp(xf), dtype, scale=4)
    return
  assert_close(y, ref.softmax(x, ax), dtype)
  assert_close(ly, ref.log_softmax(x, ax), dtype, scale=4)
  assert_close(lse, ref.logsumexp(x, ax), dtype, scale=4)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_vmap_matches_batched_call(rng, axis):
  x = logits(rng, (3, 4, 5), jnp.float32)
  batched = sj.softmax(x, axis=axis if axis == -1 else axis + 1)
  mapped = jax.vmap(lambda r: sj.softmax(r, axis=axis))(x)
  np.testing.assert_allclose(mapped, batched, rtol=1e-6)
  mapped_l = jax.vmap(lambda r: sj.log_softmax(r, axis=axis))(x)
  np.testing.assert_allclose(mapped_l, sj.log_softmax(x, axis=axis if axis == -1 else axis + 1),
                             rtol=1e-6)


def test_agrees_with_jax_nn(rng):
  x = logits(rng, (16, 33), jnp.float32)
  np.testing.assert_allclose(sj.softmax(x), jax.nn.softmax(x), rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(sj.log_softmax(x), jax.nn.log_softmax(x), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(sj.logsumexp(x), jax.nn.logsumexp(x, axis=-1), rtol=1e-6)


def _naive_softmax(x):
  e = jnp.exp(x - jnp.max(x))
  return e / jnp.sum(e)


@pytest.mark.x64
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_derivatives_three_ways(rng, scale):
  """Jacobians against autodiff of the naive formula, the float64 NumPy reference
  ``diag(y) − y yᵀ`` and central finite differences."""
  x = logits(rng, (6,), jnp.float64, scale)
  jac_ref = ref.softmax_jacobian(x)
  for jac in (jax.jacfwd, jax.jacrev):
    np.testing.assert_allclose(jac(sj.softmax)(x), jac(_naive_softmax)(x), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(jac(sj.softmax)(x), jac_ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(jac(sj.log_softmax)(x), np.eye(6) - ref.softmax(x)[None, :],
                               rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(jax.grad(sj.logsumexp)(x), ref.softmax(x), rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(jax.grad(lambda x: sj.softmax(x)[2])(x), jac_ref[2], rtol=1e-12,
                             atol=1e-15)
  check_grads(sj.softmax, (x,), order=1, modes=["fwd", "rev"], atol=1e-6, rtol=1e-6)


@pytest.mark.x64
@pytest.mark.parametrize("fn", [sj.softmax, sj.log_softmax, sj.logsumexp])
def test_finite_differences_orders_1_and_2(rng, fn):
  """Plain and masked, as one function of two outputs (one program per transformation)."""
  x = logits(rng, (3, 5), jnp.float64)
  w = jnp.array([True, False, True, True, True])
  check_grads(lambda x: (fn(x), fn(x, where=w)), (x,), order=2, modes=["fwd", "rev"],
              atol=1e-6, rtol=1e-6)


@pytest.mark.x64
def test_hessian_of_logsumexp_is_softmax_jacobian(rng):
  x = logits(rng, (5,), jnp.float64)
  np.testing.assert_allclose(jax.hessian(sj.logsumexp)(x), ref.softmax_jacobian(x), atol=1e-14)


# --- numerics ---------------------------------------------------------------


@pytest.mark.parametrize("dtype,scale", matrix([jnp.float32, jnp.float64], [1e4, 1e20, 1e30]))
def test_huge_logits_are_finite_and_exact(rng, dtype, scale):
  x = (jnp.array([[1.0, -1.0, 0.5, 0.999], [1.0, 1.0, -1.0, 0.0]]) * scale).astype(dtype)
  y = sj.softmax(x)
  ly = sj.log_softmax(x)
  assert np.all(np.isfinite(f64(y)))
  assert_close(y, ref.softmax(x), dtype)
  assert_close(ly, ref.log_softmax(x), dtype)  # absolute ε near 0, relative ε elsewhere
  assert np.isfinite(float(sj.logsumexp(x)[0]))
  g = jax.grad(lambda x: jnp.sum(sj.log_softmax(x)[:, 0]))(x)
  assert np.all(np.isfinite(f64(g)))


@pytest.mark.x64
def test_neg_inf_logits_no_nan_in_any_mode():
  x = jnp.array([0.5, -jnp.inf, 1.0, -jnp.inf], jnp.float64)
  y = sj.softmax(x)
  np.testing.assert_array_equal(y[jnp.array([1, 3])], 0.0)
  np.testing.assert_allclose(y, ref.softmax(x), rtol=1e-15)
  for f in (sj.softmax, sj.log_softmax):
    for jac in (jax.jacfwd, jax.jacrev, jax.hessian):
      j = jac(lambda x, f=f: f(x)[0] if f is sj.softmax else f(x)[2])(x)
      assert not np.any(np.isnan(j)), (f, jac)
    j = jax.jacrev(f)(x)
    np.testing.assert_array_equal(j[:, 1], 0.0)
    np.testing.assert_array_equal(j[:, 3], 0.0)
  for jac in (jax.grad, jax.jacfwd, jax.hessian):
    j = jac(sj.logsumexp)(x)
    assert not np.any(np.isnan(j))
  np.testing.assert_array_equal(jax.grad(sj.logsumexp)(x)[jnp.array([1, 3])], 0.0)


@pytest.mark.parametrize("how", ["all_neg_inf", "all_masked"])
def test_row_without_valid_entry(how):
  x = jnp.array([[1.0, 2.0, 3.0], [-jnp.inf] * 3 if how == "all_neg_inf" else [1.0, 2.0, 3.0]])
  where = None if how == "all_neg_inf" else jnp.array([[True] * 3, [False] * 3])
  np.testing.assert_array_equal(sj.softmax(x, where=where)[1], 0.0)
  np.testing.assert_array_equal(sj.log_softmax(x, where=where)[1], -jnp.inf)
  assert float(sj.logsumexp(x, where=where)[1]) == -np.inf
  for f in (sj.softmax, sj.log_softmax):
    for jac in (jax.jacfwd, jax.jacrev):
      j = jac(lambda x, f=f: f(x, where=where)[1])(x)
      np.testing.assert_array_equal(j, 0.0)
  g = jax.grad(lambda x: sj.logsumexp(x, where=where)[1])(x)
  np.testing.assert_array_equal(g, 0.0)
  h = jax.hessian(lambda x: sj.logsumexp(x, where=where)[1])(x)
  np.testing.assert_array_equal(h, 0.0)


@pytest.mark.x64
def test_masking_equals_unmasked_subset(rng):
  x = logits(rng, (8,), jnp.float64)
  where = jnp.array([True, False, True, True, False, True, True, False])
  y = sj.softmax(x, where=where)
  np.testing.assert_allclose(y[where], sj.softmax(x[where]), rtol=1e-14)
  np.testing.assert_array_equal(y[~where], 0.0)
  g = jax.grad(lambda x: sj.log_softmax(x, where=where)[0])(x)
  np.testing.assert_array_equal(g[~where], 0.0)


def test_float16_many_classes_is_finite_and_accurate(rng):
  c = 2**17
  x = logits(rng, (c,), jnp.float16, 4.0)
  ly = sj.log_softmax(x)
  assert ly.dtype == jnp.float16
  np.testing.assert_allclose(f64(ly), ref.log_softmax(x), rtol=2e-3, atol=2e-2)
  g = jax.grad(lambda x: sj.log_softmax(x)[0].astype(jnp.float32))(x)
  assert np.all(np.isfinite(f64(g)))
  want = -ref.softmax(x)
  want[0] += 1
  np.testing.assert_allclose(f64(g), want, rtol=2e-3, atol=1e-6)
  # equal logits: the float16 sum of 2^17 ones overflows (jax.nn.log_softmax gives -inf here)
  flat = jnp.zeros((c,), jnp.float16)
  np.testing.assert_allclose(f64(sj.log_softmax(flat)), -np.log(c), rtol=1e-3)
  np.testing.assert_allclose(f64(sj.softmax(flat)), 1.0 / c, rtol=1e-3)
  g = jax.grad(lambda x: sj.log_softmax(x)[0].astype(jnp.float32))(flat)
  np.testing.assert_allclose(f64(g[1:]), -1.0 / c, rtol=1e-3)


@pytest.mark.x64
def test_temperature_divides_logits(rng):
  x = logits(rng, (4, 6), jnp.float64)
  np.testing.assert_allclose(sj.softmax(x, temperature=2.5), ref.softmax(f64(x) / 2.5), rtol=1e-14)
  np.testing.assert_allclose(sj.log_softmax(x, temperature=0.5), ref.log_softmax(f64(x) / 0.5),
                             rtol=1e-14)
  # a traced (learned) temperature is differentiable
  dt = jax.grad(lambda t: sj.log_softmax(x, temperature=t)[0, 0])(2.0)
  lse_grad = -jnp.sum(ref.softmax(f64(x) / 2.0)[0] * f64(x)[0]) / 4.0
  np.testing.assert_allclose(dt, -f64(x)[0, 0] / 4.0 - lse_grad, rtol=1e-12)


@pytest.mark.internals
def test_no_retrace_for_new_values(rng):
  from softmax_jax._softmax import _tempered_softmax

  x = logits(rng, (5, 9), jnp.float32)
  sj.softmax(x)
  before = _tempered_softmax._cache_size()
  for s in (1.0, 2.0, 3.0):
    sj.softmax(x * s)
  assert _tempered_softmax._cache_size() == before


# --- the logistic function ------------------------------------------------


@pytest.mark.x64
def test_two_class_softmax_is_logistic_of_difference(rng):
  a, b = logits(rng, (2, 50), jnp.float64)
  y = sj.softmax(jnp.stack([a, b], -1))[:, 0]
  np.testing.assert_allclose(y, sj.sigmoid(a - b), rtol=1e-14)
  np.testing.assert_allclose(y, 1 / (1 + np.exp(-(f64(a) - f64(b)))), rtol=1e-14)


@pytest.mark.x64
def test_sigmoid_family(rng):
  x = logits(rng, (40,), jnp.float64, 10)
  s = 1 / (1 + np.exp(-f64(x)))
  np.testing.assert_allclose(sj.sigmoid(x), s, rtol=1e-14)
  np.testing.assert_allclose(sj.log_sigmoid(x), -np.log1p(np.exp(-f64(x))), rtol=1e-12)
  np.testing.assert_allclose(sj.sigmoid_derivative(x), s / (1 + np.exp(f64(x))), rtol=1e-13)
  # autodiff of σ uses σ(1 − σ), which loses digits where σ ≈ 1: agreement to 1e-9
  np.testing.assert_allclose(sj.sigmoid_derivative(x), jax.vmap(jax.grad(sj.sigmoid))(x),
                             rtol=1e-9)
  # tails: σ'(40) = e^{-40}/(1+e^{-40})^2, which σ(1−σ) loses to 0 in float64
  assert float(sj.sigmoid_derivative(jnp.float64(40.0))) == pytest.approx(np.exp(-40.0), rel=1e-12)
  big = jnp.array([1e30, -1e30], jnp.float32)
  np.testing.assert_array_equal(sj.sigmoid(big), [1.0, 0.0])
  np.testing.assert_array_equal(sj.log_sigmoid(big), np.array([0.0, -1e30], np.float32))
  assert sj.sigmoid(jnp.zeros(3, jnp.bfloat16)).dtype == jnp.bfloat16


# --- errors -----------------------------------------------------------------


@pytest.mark.parametrize("fn", [sj.softmax, sj.log_softmax, sj.logsumexp, sj.sigmoid])
@pytest.mark.parametrize("bad", [jnp.arange(3), jnp.array([True, False])])
def test_integer_or_bool_input_is_type_error(fn, bad):
  with pytest.raises(TypeError, match="x must be a floating-point array"):
    fn(bad)


def test_bad_where_axis_temperature():
  x = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match=r"where has shape \(2, 2\) but x has shape \(2, 3\)"):
    sj.softmax(x, where=jnp.ones((2, 2), bool))
  with pytest.raises(TypeError, match="where must be a boolean"):
    sj.log_softmax(x, where=jnp.ones((2, 3)))
  with pytest.raises(ValueError, match="axis=2 is out of range"):
    sj.softmax(x, axis=2)
  for t in (0.0, -1.0, float("nan")):
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
      sj.softmax(x, temperature=t)
  with pytest.raises(ValueError, match="at least one dimension"):
    sj.softmax(jnp.float32(1.0))
