"""Property tests (hypothesis) over shapes, axes, dtypes and logit scales.

Example counts and the set of shapes are bounded so the number of compilations
stays small on a 2-core CI machine.  A float64 example runs under
``jax.enable_x64(True)``; every other example runs in the default configuration (x64 off).
"""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import softmax_jax as sj

import reference as ref
from _util import f64

SHAPES = [(5,), (3, 4), (2, 3, 5), (1, 17)]
SCALES = [1e-3, 1.0, 10.0, 100.0, 1e4]
FLOATS = [jnp.float64, jnp.float32, jnp.bfloat16, jnp.float16]

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
settings.load_profile("ci")


@st.composite
def cases(draw, dtypes=FLOATS):
  shape = draw(st.sampled_from(SHAPES))
  axis = draw(st.integers(-len(shape), len(shape) - 1))
  dtype = draw(st.sampled_from(dtypes))
  scale = draw(st.sampled_from(SCALES))
  seed = draw(st.integers(0, 2**16))
  x = np.random.default_rng(seed).normal(size=shape) * scale
  if dtype == jnp.float16:
    x = np.clip(x, -6e4, 6e4)
  return x, dtype, axis, seed


@contextlib.contextmanager
def _as_array(case):
  """``(x, axis, seed)`` with ``x`` in the case's dtype, under x64 for a float64 case only."""
  x, dtype, axis, seed = case
  with jax.enable_x64(dtype == jnp.float64):
    yield jnp.asarray(x).astype(dtype), axis, seed


@given(cases())
def test_probabilities_in_unit_interval_and_sum_to_one(case):
  with _as_array(case) as (x, axis, _):
    _unit_interval_and_sum_to_one(x, axis)


def _unit_interval_and_sum_to_one(x, axis):
  y = f64(sj.softmax(x, axis))
  assert np.all((y >= 0) & (y <= 1))
  eps = float(jnp.finfo(x.dtype).eps)
  np.testing.assert_allclose(y.sum(axis), 1.0, atol=x.shape[axis] * eps)


@given(cases(dtypes=[jnp.float64, jnp.float32]), st.sampled_from([-7.0, 0.5, 123.0]))
def test_shift_invariance(case, shift):
  with _as_array(case) as (x, axis, _):
    _shift_invariance(x, axis, shift)


def _shift_invariance(x, axis, shift):
  a = f64(sj.softmax(x, axis))
  b = f64(sj.softmax(x + jnp.asarray(shift, x.dtype), axis))
  np.testing.assert_allclose(a, b, atol=1e-5 if x.dtype == jnp.float32 else 1e-12)


@given(cases(dtypes=[jnp.float64]))
def test_jacobian_symmetric_rows_sum_to_zero_and_match_products(case):
  with _as_array(case) as (x, axis, seed):
    _jacobian_properties(x, axis, seed)


def _jacobian_properties(x, axis, seed):
  jac = np.asarray(sj.softmax_jacobian(x, axis))
  jm = np.moveaxis(jac, axis % x.ndim, -2)  # i sits at the class axis of x, j last
  np.testing.assert_allclose(jm, np.swapaxes(jm, -1, -2), atol=0)
  np.testing.assert_allclose(jm.sum(-1), 0.0, atol=1e-15)
  assert np.all(np.linalg.eigvalsh(jm) > -1e-15)
  v = jnp.asarray(np.random.default_rng(seed + 1).normal(size=x.shape))
  vm = np.moveaxis(f64(v), axis, -1)
  dense = np.moveaxis(np.einsum("...ij,...j->...i", jm, vm), -1, axis)
  np.testing.assert_allclose(sj.softmax_jvp(x, v, axis), dense, atol=1e-14)
  np.testing.assert_allclose(sj.softmax_vjp(x, v, axis), dense, atol=1e-14)


@given(cases(), st.sampled_from([0.0, 0.1]))
def test_loss_non_negative_and_one_hot_gradient_rows_sum_to_zero(case, eps):
  with _as_array(case) as (x, axis, seed):
    _one_hot_gradient(x, axis, seed, eps)


def _one_hot_gradient(x, axis, seed, eps):
  num_classes = x.shape[axis]
  labels_shape = x.shape[:axis % x.ndim] + x.shape[axis % x.ndim + 1:]
  labels = jnp.asarray(np.random.default_rng(seed).integers(0, num_classes, labels_shape))
  def loss(z):
    return sj.cross_entropy_with_integer_labels(z, labels, axis, label_smoothing=eps,
                                                reduction="sum")
  per = sj.cross_entropy_with_integer_labels(x, labels, axis, label_smoothing=eps,
                                             reduction="none")
  assert np.all(f64(per) >= 0)
  g = f64(jax.grad(loss)(x.astype(jnp.float64) if x.dtype == jnp.float64 else x))
  scale = np.max(np.abs(g), axis=axis) + np.finfo(np.float64).tiny
  eps_dtype = float(jnp.finfo(x.dtype).eps)
  # computed in ≥ float32 and rounded to the input dtype once per entry
  assert np.all(np.abs(g.sum(axis)) <= 4 * num_classes * eps_dtype * scale)
  # and it is the lecture's y − t (smoothed)
  moved = np.moveaxis(f64(x), axis, -1)
  t = np.eye(num_classes)[np.asarray(labels)] * (1 - eps) + eps / num_classes
  want = np.moveaxis(ref.softmax(moved) - t, -1, axis)
  tol = 16 * max(eps_dtype, float(jnp.finfo(jnp.float32).eps) if x.dtype != jnp.float64 else 0)
  np.testing.assert_allclose(g, want, atol=tol)


@given(cases(dtypes=[jnp.float64, jnp.float32]))
def test_soft_targets_loss_bounds(case):
  with _as_array(case) as (x, axis, seed):
    _gibbs_bound(x, axis, seed)


def _gibbs_bound(x, axis, seed):
  t = np.random.default_rng(seed).random(x.shape)
  t = jnp.asarray(t / t.sum(axis, keepdims=True)).astype(x.dtype)
  per = f64(sj.cross_entropy(x, t, axis, reduction="none"))
  # Gibbs: H(t, y) ≥ H(t) ≥ 0
  tt = np.moveaxis(f64(t), axis, -1)
  entropy = -np.sum(tt * np.log(tt), -1)
  assert np.all(per >= entropy - 1e-4 * np.maximum(1, np.abs(entropy)))


@given(cases(dtypes=[jnp.float64]), st.integers(0, 2**16))
def test_masked_softmax_equals_softmax_of_subset(case, mask_seed):
  with _as_array(case) as (x, axis, _):
    _masked_subset(x, axis, mask_seed)


def _masked_subset(x, axis, mask_seed):
  mask = np.random.default_rng(mask_seed).random(x.shape) < 0.6
  y = f64(sj.softmax(x, axis, where=jnp.asarray(mask)))
  xm = np.moveaxis(f64(x), axis, -1).reshape(-1, x.shape[axis])
  mm = np.moveaxis(mask, axis, -1).reshape(-1, x.shape[axis])
  ym = np.moveaxis(y, axis, -1).reshape(-1, x.shape[axis])
  for row, m, got in zip(xm, mm, ym, strict=True):
    np.testing.assert_array_equal(got[~m], 0.0)
    if m.any():
      np.testing.assert_allclose(got[m], ref.softmax(row[m]), rtol=1e-13)
