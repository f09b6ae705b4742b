"""softmax_jacobian, softmax_jvp and softmax_vjp."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softmax_jax as sj

import reference as ref
from _util import DTYPES, TRANSFORMS, assert_close, f64, logits, matrix


def _naive_softmax(x):
  e = jnp.exp(x - jnp.max(x))
  return e / jnp.sum(e)


@pytest.mark.parametrize("dtype,transform", matrix(DTYPES, list(TRANSFORMS)))
def test_jacobian_matches_reference_and_autodiff(rng, dtype, transform):
  x = logits(rng, (4, 7), dtype)
  jac = TRANSFORMS[transform](sj.softmax_jacobian)(x)
  assert jac.shape == (4, 7, 7) and jac.dtype == dtype
  assert_close(jac, ref.softmax_jacobian(x), dtype)
  if dtype == jnp.float64:
    for ad in (jax.jacfwd, jax.jacrev):
      np.testing.assert_allclose(jac, jax.vmap(ad(_naive_softmax))(x), rtol=1e-12, atol=1e-15)
      np.testing.assert_allclose(jac, jax.vmap(ad(sj.softmax))(x), rtol=1e-12, atol=1e-15)


@pytest.mark.x64
@pytest.mark.parametrize("shape,axis", [((5, 3), 0), ((2, 5, 3), 1), ((5,), 0)])
def test_jacobian_axis_layout(rng, shape, axis):
  x = logits(rng, shape, jnp.float64)
  jac = sj.softmax_jacobian(x, axis=axis)
  assert jac.shape == x.shape + (x.shape[axis],)
  # J[..., i (at axis), ..., j] = ∂ y_i / ∂ x_j along the class axis
  moved = np.moveaxis(f64(x), axis, -1)
  want = np.moveaxis(ref.softmax_jacobian(moved), -2, axis)
  np.testing.assert_allclose(jac, want, rtol=1e-13, atol=1e-16)


@pytest.mark.x64
def test_jacobian_with_temperature_is_chain_rule(rng):
  x = logits(rng, (6,), jnp.float64)
  got = sj.softmax_jacobian(x, temperature=3.0)
  np.testing.assert_allclose(got, jax.jacfwd(lambda x: sj.softmax(x, temperature=3.0))(x),
                             rtol=1e-12, atol=1e-15)


@pytest.mark.x64
def test_jacobian_properties(rng):
  x = logits(rng, (3, 9), jnp.float64, 5.0)
  jac = np.asarray(sj.softmax_jacobian(x))
  np.testing.assert_allclose(jac, np.swapaxes(jac, -1, -2), atol=0)  # symmetric
  np.testing.assert_allclose(jac.sum(-1), 0.0, atol=1e-16)  # rows sum to 0
  assert np.all(np.linalg.eigvalsh(jac) > -1e-15)  # positive semi-definite


def test_jacobian_neg_inf_rows_and_columns_are_zero():
  x = jnp.array([1.0, -jnp.inf, 0.0], jnp.float32)
  jac = sj.softmax_jacobian(x)
  np.testing.assert_array_equal(jac[1], 0.0)
  np.testing.assert_array_equal(jac[:, 1], 0.0)
  assert not np.any(np.isnan(jac))


@pytest.mark.parametrize("dtype,fn", matrix([jnp.float64, jnp.float32, jnp.bfloat16],
                                             [sj.softmax_jvp, sj.softmax_vjp]))
def test_products_equal_dense_jacobian(rng, dtype, fn):
  x = logits(rng, (5, 11), dtype)
  v = logits(rng, (5, 11), dtype, 1.0)
  got = fn(x, v)
  assert got.dtype == dtype
  want = np.einsum("nij,nj->ni", ref.softmax_jacobian(x), f64(v))
  assert_close(got, want, dtype, scale=2)


@pytest.mark.x64
def test_products_match_jax_jvp_and_vjp(rng):
  x = logits(rng, (4, 6), jnp.float64)
  v = logits(rng, (4, 6), jnp.float64, 1.0)
  _, jvp = jax.jvp(jax.nn.softmax, (x,), (v,))
  _, pullback = jax.vjp(jax.nn.softmax, x)
  np.testing.assert_allclose(sj.softmax_jvp(x, v), jvp, rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(sj.softmax_vjp(x, v), pullback(v)[0], rtol=1e-12, atol=1e-15)
  # along another axis, and under vmap
  np.testing.assert_allclose(sj.softmax_jvp(x.T, v.T, axis=0), jvp.T, rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(jax.vmap(sj.softmax_vjp)(x, v), pullback(v)[0], rtol=1e-12,
                             atol=1e-15)


@pytest.mark.internals
def test_products_never_form_the_jacobian():
  # the jaxpr of the product holds no [C, C] intermediate
  x = jnp.zeros((2, 64))
  jaxpr = jax.make_jaxpr(sj.softmax_vjp)(x, x)
  shapes = {tuple(v.aval.shape) for eqn in jaxpr.jaxpr.eqns for v in eqn.outvars}
  shapes |= {tuple(v.aval.shape) for e in jaxpr.jaxpr.eqns for sub in e.params.values()
             if hasattr(sub, "jaxpr") for q in sub.jaxpr.eqns for v in q.outvars}
  assert not any(s[-2:] == (64, 64) for s in shapes if len(s) >= 2)
  assert (2, 64) in shapes


def test_product_errors():
  x = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match=r"tangent has shape \(2, 2\) but x has shape \(2, 3\)"):
    sj.softmax_jvp(x, jnp.zeros((2, 2)))
  with pytest.raises(TypeError, match="cotangent must be a floating-point array"):
    sj.softmax_vjp(x, jnp.zeros((2, 3), jnp.int32))
  with pytest.raises(TypeError, match="axis must be a single int"):
    sj.softmax_jacobian(x, axis=(0, 1))
  with pytest.raises(TypeError, match="x must be a floating-point array"):
    sj.softmax_jacobian(jnp.arange(3))
