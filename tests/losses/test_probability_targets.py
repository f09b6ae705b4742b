"""cross_entropy and cross_entropy_grad (softmax_jax/losses/_probability_targets.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import softmax_jax as sj

import reference as ref
from _util import (
  DTYPES,
  TRANSFORMS,
  assert_close,
  assert_finite_derivatives,
  assert_hessian_is_softmax_jacobian,
  f64,
  logits,
  logits_with_an_empty_row,
  matrix,
)


def _soft_targets(rng, shape, dtype=jnp.float64):
  t = rng.random(shape)
  return jnp.asarray(t / t.sum(-1, keepdims=True)).astype(dtype)


def test_agrees_with_optax(rng):
  z = logits(rng, (8, 12), jnp.float32)
  t = _soft_targets(rng, (8, 12), jnp.float32)
  np.testing.assert_allclose(sj.cross_entropy(z, t, reduction="none"),
                             optax.softmax_cross_entropy(z, t), rtol=1e-6)
  g_ours = jax.grad(sj.cross_entropy)(z, t)
  g_optax = jax.grad(lambda z: optax.softmax_cross_entropy(z, t).mean())(z)
  np.testing.assert_allclose(g_ours, g_optax, rtol=1e-5, atol=1e-8)


# --- values --------------------------------------------------------------------


@pytest.mark.parametrize("dtype,transform", matrix(DTYPES, list(TRANSFORMS)))
def test_values_match_reference(rng, dtype, transform):
  z = logits(rng, (6, 9), dtype)
  t = _soft_targets(rng, (6, 9), dtype)
  per = TRANSFORMS[transform](lambda z, t: sj.cross_entropy(z, t, reduction="none"))(z, t)
  want = ref.cross_entropy(f64(z), f64(t))
  out_dtype = jnp.float32 if dtype in (jnp.bfloat16, jnp.float16) else dtype
  assert per.dtype == out_dtype
  assert_close(per, want, out_dtype, scale=4)
  assert_close(sj.cross_entropy(z, t), want.mean(), out_dtype, scale=4)
  assert_close(sj.cross_entropy(z, t, reduction="sum"), want.sum(), out_dtype, scale=8)


@pytest.mark.x64
@pytest.mark.parametrize("axis", [0, 1])
def test_class_axis(rng, axis):
  z = logits(rng, (5, 7), jnp.float64)
  t = _soft_targets(rng, (5, 7))
  moved = np.moveaxis(f64(z), axis, -1)
  np.testing.assert_allclose(
      sj.cross_entropy(z, t, axis=axis, reduction="none"),
      ref.cross_entropy(moved, np.moveaxis(f64(t), axis, -1)), rtol=1e-13)
  g = jax.grad(lambda z: sj.cross_entropy(z, t, axis=axis, reduction="sum"))(z)
  np.testing.assert_allclose(g, sj.cross_entropy_grad(z, t, axis=axis), rtol=1e-13, atol=1e-16)


# --- derivatives ------------------------------------------------------------------


@pytest.mark.x64
def test_gradient_three_ways(rng):
  """∂ξ/∂z against autodiff of the naive formula, the float64 NumPy y − t, and central
  finite differences (orders 1 and 2); ∂ξ/∂t against finite differences too."""
  z = logits(rng, (7,), jnp.float64)
  t = _soft_targets(rng, (7,))
  ours = lambda z: sj.cross_entropy(z, t)  # noqa: E731
  naive = lambda z: -jnp.sum(t * jax.nn.log_softmax(z))  # noqa: E731
  want = jax.grad(naive)(z)
  np.testing.assert_allclose(jax.grad(ours)(z), want, rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(jax.jacfwd(ours)(z), want, rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(jax.grad(ours)(z), ref.softmax(f64(z)) - f64(t), rtol=1e-12,
                             atol=1e-15)  # the lecture's y − t
  check_grads(ours, (z,), order=2, modes=["rev"], atol=1e-6, rtol=1e-6)
  check_grads(lambda t: sj.cross_entropy(z, t), (t,), order=1, modes=["rev"])


@pytest.mark.x64
def test_hessian_is_softmax_jacobian(rng):
  z = logits(rng, (6,), jnp.float64)
  loss = lambda z: sj.cross_entropy(z, jax.nn.one_hot(2, 6, dtype=z.dtype))  # noqa: E731
  assert_hessian_is_softmax_jacobian(loss, z, logits(rng, (6,), jnp.float64, 1.0))


@pytest.mark.x64
def test_cross_entropy_grad_is_y_minus_t(rng):
  z = logits(rng, (4, 8), jnp.float64)
  t = _soft_targets(rng, (4, 8))
  np.testing.assert_allclose(sj.cross_entropy_grad(z, t), ref.softmax(f64(z)) - f64(t),
                             rtol=1e-12, atol=1e-16)
  np.testing.assert_allclose(
      sj.cross_entropy_grad(z, t),
      jax.grad(lambda z: sj.cross_entropy(z, t, reduction="sum"))(z), rtol=1e-13, atol=1e-16)


def test_cross_entropy_grad_keeps_the_half_dtype(rng):
  z = logits(rng, (4, 8), jnp.bfloat16)
  t = _soft_targets(rng, (4, 8), jnp.bfloat16)
  g = sj.cross_entropy_grad(z, t)
  assert g.dtype == jnp.bfloat16
  assert_close(g, ref.softmax(f64(z)) - f64(t), jnp.bfloat16, scale=2)


@pytest.mark.internals
def test_reverse_mode_keeps_one_logits_sized_temporary(rng):
  """Internals (compiled memory): under ``jax.jit`` the gradient of the custom-JVP loss is
  written in the pass that recomputes ``y``: one ``[N, C]`` buffer, as optax (the row
  statistics' route on the CPU); 2 before."""
  n, c = 512, 1024
  z = logits(rng, (n, c), jnp.float32)
  t = _soft_targets(rng, (n, c), jnp.float32)
  compiled = jax.jit(jax.value_and_grad(lambda z: sj.cross_entropy(z, t))).lower(z).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  assert temp <= 1.1 * n * c * 4, temp


# --- numerics ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype,scale", matrix([jnp.float32, jnp.float64], [1e4, 1e30]))
def test_huge_logits(rng, dtype, scale):
  z = (jnp.asarray(rng.normal(size=(4, 6))) * scale).astype(dtype)
  t = jax.nn.one_hot(jnp.asarray(rng.integers(0, 6, 4)), 6, dtype=dtype)
  val, g = jax.value_and_grad(lambda z: sj.cross_entropy(z, t, label_smoothing=0.1))(z)
  assert np.isfinite(float(val)) and np.all(np.isfinite(f64(g)))
  assert_close(sj.cross_entropy(z, t, reduction="none"), ref.cross_entropy(f64(z), f64(t)),
               dtype, scale=4)


@pytest.mark.x64
def test_neg_inf_logits_with_zero_target():
  z = jnp.array([[1.0, -jnp.inf, 0.0], [2.0, 0.5, -jnp.inf]], jnp.float64)
  t = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], jnp.float64)
  f = lambda z: sj.cross_entropy(z, t)  # noqa: E731
  np.testing.assert_allclose(f(z), ref.cross_entropy(f64(z), f64(t)).mean(), rtol=1e-14)
  assert_finite_derivatives(f, z)
  g = jax.grad(f)(z)
  assert float(g[0, 1]) == 0.0 and float(g[1, 2]) == 0.0


@pytest.mark.x64
@pytest.mark.parametrize("how", ["neg_inf", "where"])
def test_row_without_valid_class(how):
  z, where = logits_with_an_empty_row(how)
  t = jax.nn.one_hot(jnp.array([1, 2, 0]), 3, dtype=jnp.float64)
  keep = np.array([0, 2])
  f = lambda z: sj.cross_entropy(z, t, where=where)  # noqa: E731
  # the empty row is not in the mean
  np.testing.assert_allclose(f(z), ref.cross_entropy(f64(z)[keep], f64(t)[keep]).mean(),
                             rtol=1e-14)
  for d in (jax.grad, jax.hessian):
    out = np.asarray(d(f)(z))
    assert not np.any(np.isnan(out))
    np.testing.assert_array_equal(out[1], 0.0)


def test_target_mass_on_a_masked_class_is_nan(rng):
  z = logits(rng, (5, 4), jnp.float32)
  where = jnp.array([True, True, False, True])
  t = jax.nn.one_hot(jnp.array([2, 0, 1, 3, 2]), 4)
  per = sj.cross_entropy(z, t, where=where, reduction="none")
  assert np.isnan(per[0]) and np.isnan(per[4])
  assert np.all(np.isfinite(per[1:4]))
  g = sj.cross_entropy_grad(jnp.where(where, z, -jnp.inf), t)
  assert np.all(np.isnan(g[0])) and np.all(np.isfinite(g[1]))


@pytest.mark.x64
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_unmasked_loss_takes_the_masked_route_only_when_needed(rng, eps):
  """Without ``where`` the loss is computed without masking selects, unless a row is
  non-finite there (a −inf logit, say); then every row goes the masked way.  Both routes
  give the same numbers on the rows they share."""
  z = jnp.asarray(rng.normal(size=(5, 7)) * 4)
  t = jnp.asarray(rng.dirichlet(np.ones(7), 5))
  z_inf = z.at[4, 3].set(-jnp.inf)
  t_inf = t.at[4].set(t[4].at[3].set(0.0) / (1 - t[4, 3]))
  ones = jnp.ones(z.shape, bool)

  def loss(z, t, where=None):
    return sj.cross_entropy(z, t, label_smoothing=eps, reduction="none", where=where)

  fast, mixed, masked = loss(z, t), loss(z_inf, t_inf), loss(z, t, ones)
  np.testing.assert_allclose(fast[:4], mixed[:4], rtol=1e-14)
  np.testing.assert_allclose(fast, masked, rtol=1e-14)
  np.testing.assert_allclose(mixed, ref.cross_entropy(f64(z_inf), f64(t_inf), eps=eps),
                             rtol=1e-13)
  gf = jax.grad(lambda z: jnp.sum(loss(z, t)))(z)
  gm = jax.grad(lambda z: jnp.sum(loss(z, t, ones)))(z)
  np.testing.assert_allclose(gf, gm, rtol=1e-14, atol=1e-16)


# --- errors ----------------------------------------------------------------------


def test_errors_name_the_argument():
  z = jnp.zeros((8, 10))
  with pytest.raises(TypeError, match="logits must be a floating-point array"):
    sj.cross_entropy(jnp.zeros((2, 2), bool), jnp.zeros((2, 2)))
  with pytest.raises(ValueError,
                     match=r"targets has shape \(8, 9\) but logits has shape \(8, 10\)"):
    sj.cross_entropy(z, jnp.zeros((8, 9)))
  with pytest.raises(TypeError, match="targets must be a floating array"):
    sj.cross_entropy(z, jnp.zeros((8, 10), jnp.int32))
  with pytest.raises(TypeError, match="targets must be a floating array"):
    sj.cross_entropy_grad(z, jnp.zeros((8, 10), jnp.int32))
  with pytest.raises(ValueError, match=r"where has shape \(8, 3\) but logits has shape \(8, 10\)"):
    sj.cross_entropy(z, z, where=jnp.ones((8, 3), bool))
  with pytest.raises(ValueError, match="reduction must be one of"):
    sj.cross_entropy(z, z, reduction="avg")
  with pytest.raises(ValueError, match=r"label_smoothing must lie in \[0, 1\]"):
    sj.cross_entropy(z, z, label_smoothing=1.5)
  with pytest.raises(TypeError, match="axis must be a single int"):
    sj.cross_entropy(z, z, axis=(0, 1))
