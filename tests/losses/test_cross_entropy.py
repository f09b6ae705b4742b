"""cross_entropy, cross_entropy_with_integer_labels, cross_entropy_grad, binary_cross_entropy."""


import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import softmax_jax as sj

import reference as ref
from _util import DTYPES, TRANSFORMS, assert_close, f64, logits

pytestmark = pytest.mark.x64

LOSSES = ["soft", "int"]


def _soft_targets(rng, shape, dtype=jnp.float64):
  t = rng.random(shape)
  return jnp.asarray(t / t.sum(-1, keepdims=True)).astype(dtype)


def _naive_soft(z, t):
  """−Σ t log softmax(z), written in the test from the lecture."""
  return -jnp.sum(t * jax.nn.log_softmax(z))


def _naive_int(z, label):
  return -jax.nn.log_softmax(z)[label]


# --- values --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transform", TRANSFORMS)
def test_soft_values_match_reference(rng, dtype, transform):
  z = logits(rng, (6, 9), dtype)
  t = _soft_targets(rng, (6, 9))
  per = TRANSFORMS[transform](lambda z, t: sj.cross_entropy(z, t, reduction="none"))(z, t)
  want = ref.cross_entropy(z, t)
  out_dtype = jnp.float32 if dtype in (jnp.bfloat16, jnp.float16) else dtype
  assert per.dtype == out_dtype
  assert_close(per, want, out_dtype, scale=4)
  assert_close(sj.cross_entropy(z, t), want.mean(), out_dtype, scale=4)
  assert_close(sj.cross_entropy(z, t, reduction="sum"), want.sum(), out_dtype, scale=8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transform", TRANSFORMS)
def test_int_values_match_reference(rng, dtype, transform):
  z = logits(rng, (6, 9), dtype)
  y = jnp.asarray(rng.integers(0, 9, 6))
  per = TRANSFORMS[transform](
      lambda z, y: sj.cross_entropy_with_integer_labels(z, y, reduction="none"))(z, y)
  want = ref.torch_cross_entropy(f64(z), np.asarray(y), reduction="none")
  out_dtype = jnp.float32 if dtype in (jnp.bfloat16, jnp.float16) else dtype
  assert_close(per, want, out_dtype, scale=4)


def test_agree_with_optax(rng):
  z = logits(rng, (8, 12), jnp.float32)
  t = _soft_targets(rng, (8, 12), jnp.float32)
  y = jnp.asarray(rng.integers(0, 12, 8))
  np.testing.assert_allclose(sj.cross_entropy(z, t, reduction="none"),
                             optax.softmax_cross_entropy(z, t), rtol=1e-6)
  np.testing.assert_allclose(sj.cross_entropy_with_integer_labels(z, y, reduction="none"),
                             optax.softmax_cross_entropy_with_integer_labels(z, y), rtol=1e-6)
  g_ours = jax.grad(sj.cross_entropy_with_integer_labels)(z, y)
  g_optax = jax.grad(lambda z: optax.softmax_cross_entropy_with_integer_labels(z, y).mean())(z)
  np.testing.assert_allclose(g_ours, g_optax, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("axis", [0, 1])
def test_class_axis(rng, axis):
  z = logits(rng, (5, 7), jnp.float64)
  y = jnp.asarray(rng.integers(0, z.shape[axis], z.shape[1 - axis]))
  t = _soft_targets(rng, (5, 7))
  moved = np.moveaxis(f64(z), axis, -1)
  np.testing.assert_allclose(
      sj.cross_entropy_with_integer_labels(z, y, axis=axis, reduction="none"),
      ref.torch_cross_entropy(moved, np.asarray(y), reduction="none"), rtol=1e-13)
  np.testing.assert_allclose(
      sj.cross_entropy(z, t, axis=axis, reduction="none"),
      ref.cross_entropy(moved, np.moveaxis(f64(t), axis, -1)), rtol=1e-13)
  g = jax.grad(lambda z: sj.cross_entropy(z, t, axis=axis, reduction="sum"))(z)
  np.testing.assert_allclose(g, sj.cross_entropy_grad(z, t, axis=axis), rtol=1e-13, atol=1e-16)


# --- PyTorch semantics ------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
def test_torch_semantics(rng, reduction, eps, weighted):
  z = logits(rng, (10, 5), jnp.float64)
  y = rng.integers(0, 5, 10)
  y[[2, 7]] = -100
  w = rng.random(5) + 0.5 if weighted else None
  got = sj.cross_entropy_with_integer_labels(
      z, jnp.asarray(y), class_weights=None if w is None else jnp.asarray(w), ignore_index=-100,
      label_smoothing=eps, reduction=reduction)
  want = ref.torch_cross_entropy(f64(z), y, w, -100, eps, reduction)
  np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
  # gradient against autodiff of the naive reference formula, in float64
  def naive(z, w_arr):
    logp = jax.nn.log_softmax(z)
    wv = jnp.ones(5) if w_arr is None else w_arr
    keep = y != -100
    yt = jnp.where(keep, y, 0)
    nll = -jnp.take_along_axis(logp, yt[:, None], 1)[:, 0] * wv[yt]
    smooth = -jnp.sum(logp * wv, -1)
    per = jnp.where(keep, (1 - eps) * nll + eps / 5 * smooth, 0)
    if reduction == "none":
      return per
    if reduction == "sum":
      return per.sum()
    return per.sum() / jnp.sum(jnp.where(keep, wv[yt], 0))
  ours = lambda z, w_arr: sj.cross_entropy_with_integer_labels(  # noqa: E731
      z, jnp.asarray(y), class_weights=w_arr, ignore_index=-100, label_smoothing=eps,
      reduction=reduction)
  wa = None if w is None else jnp.asarray(w)
  np.testing.assert_allclose(jax.jacrev(ours)(z, wa), jax.jacrev(naive)(z, wa), rtol=1e-11,
                             atol=1e-14)
  if weighted:  # class weights are differentiable too
    np.testing.assert_allclose(jax.jacrev(ours, 1)(z, wa), jax.jacrev(naive, 1)(z, wa),
                               rtol=1e-11, atol=1e-14)


def test_against_pytorch_when_installed(rng):
  torch = pytest.importorskip("torch")
  z = rng.normal(size=(12, 6)) * 3
  y = rng.integers(0, 6, 12)
  y[3] = -100
  w = rng.random(6) + 0.1
  for eps in (0.0, 0.3):
    for red in ("mean", "sum", "none"):
      zt = torch.tensor(z, requires_grad=True)
      loss = torch.nn.functional.cross_entropy(zt, torch.tensor(y), weight=torch.tensor(w),
                                               label_smoothing=eps, reduction=red)
      loss.sum().backward()
      def ours(z, eps=eps, red=red):
        return sj.cross_entropy_with_integer_labels(
            z, jnp.asarray(y), class_weights=jnp.asarray(w), ignore_index=-100,
            label_smoothing=eps, reduction=red)
      np.testing.assert_allclose(ours(jnp.asarray(z)), loss.detach().numpy(), rtol=1e-12)
      g = jax.grad(lambda z, f=ours: jnp.sum(f(z)))(jnp.asarray(z))
      np.testing.assert_allclose(g, zt.grad.numpy(), rtol=1e-10, atol=1e-14)


# --- derivatives ------------------------------------------------------------------


@pytest.mark.parametrize("kind", LOSSES)
def test_gradient_three_ways(rng, kind):
  z = logits(rng, (7,), jnp.float64)
  t = _soft_targets(rng, (7,))
  label = 3
  if kind == "soft":
    ours = lambda z: sj.cross_entropy(z, t)  # noqa: E731
    naive = lambda z: _naive_soft(z, t)  # noqa: E731
    y_minus_t = ref.softmax(z) - f64(t)
  else:
    ours = lambda z: sj.cross_entropy_with_integer_labels(z[None], jnp.array([label]))  # noqa: E731
    naive = lambda z: _naive_int(z, label)  # noqa: E731
    y_minus_t = ref.softmax(z) - np.eye(7)[label]
  for ad in (jax.grad, jax.jacrev, jax.jacfwd):
    want = ad(naive)(z)
    got = (jax.grad if ad is jax.jacfwd else ad)(ours)(z)  # custom_vjp: reverse mode
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(jax.grad(ours)(z), y_minus_t, rtol=1e-12, atol=1e-15)  # y − t
  check_grads(ours, (z,), order=2, modes=["rev"], atol=1e-6, rtol=1e-6)
  check_grads(lambda t: sj.cross_entropy(z, t), (t,), order=1, modes=["rev"])


@pytest.mark.parametrize("kind", LOSSES)
def test_hessian_is_softmax_jacobian(rng, kind):
  z = logits(rng, (6,), jnp.float64)
  if kind == "soft":
    loss = lambda z: sj.cross_entropy(z, jax.nn.one_hot(2, 6, dtype=z.dtype))  # noqa: E731
  else:
    loss = lambda z: sj.cross_entropy_with_integer_labels(z, jnp.array(2))  # noqa: E731
  jac = sj.softmax_jacobian(z)
  np.testing.assert_allclose(jax.hessian(loss)(z), jac, rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(jax.jacrev(jax.jacrev(loss))(z), jac, rtol=1e-12, atol=1e-15)
  # forward-over-reverse Hessian-vector product
  v = logits(rng, (6,), jnp.float64, 1.0)
  _, hvp = jax.jvp(jax.grad(loss), (z,), (v,))
  np.testing.assert_allclose(hvp, jac @ v, rtol=1e-12, atol=1e-15)


def test_hessian_with_smoothing_and_weights(rng):
  z = logits(rng, (5,), jnp.float64)
  w = jnp.asarray(rng.random(5) + 0.5)
  ours = lambda z: sj.cross_entropy_with_integer_labels(  # noqa: E731
      z, jnp.array(1), class_weights=w, label_smoothing=0.3, reduction="sum")
  def naive(z):
    logp = jax.nn.log_softmax(z)
    return 0.7 * -w[1] * logp[1] + 0.3 / 5 * -jnp.sum(w * logp)
  np.testing.assert_allclose(jax.hessian(ours)(z), jax.hessian(naive)(z), rtol=1e-11, atol=1e-14)


def test_cross_entropy_grad_is_y_minus_t(rng):
  z = logits(rng, (4, 8), jnp.float64)
  t = _soft_targets(rng, (4, 8))
  np.testing.assert_allclose(sj.cross_entropy_grad(z, t), ref.softmax(z) - f64(t), rtol=1e-12,
                             atol=1e-16)
  np.testing.assert_allclose(
      sj.cross_entropy_grad(z, t),
      jax.grad(lambda z: sj.cross_entropy(z, t, reduction="sum"))(z), rtol=1e-13, atol=1e-16)
  g32 = sj.cross_entropy_grad(z.astype(jnp.bfloat16), t.astype(jnp.bfloat16))
  assert g32.dtype == jnp.bfloat16


@pytest.mark.parametrize("name", ["int", "soft"])
def test_reverse_mode_keeps_no_logits_sized_temporary(rng, name):
  """Internals (compiled memory): under ``jax.jit`` the gradient of the custom-JVP loss is
  written in the pass that recomputes ``y``; no further ``[N, C]`` buffer is allocated."""
  n, c = 512, 1024
  z = logits(rng, (n, c), jnp.float32)
  y = jnp.asarray(rng.integers(0, c, n))
  t = _soft_targets(rng, (n, c), jnp.float32)
  loss = {"int": lambda z: sj.cross_entropy_with_integer_labels(z, y),
          "soft": lambda z: sj.cross_entropy(z, t)}[name]
  compiled = jax.jit(jax.value_and_grad(loss)).lower(z).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  # soft: one [N, C] buffer, as optax (the row statistics' route on the CPU); 2 before
  limit = {"int": 0.05, "soft": 1.1}[name] * n * c * 4
  assert temp <= limit, (name, temp)


# --- numerics ---------------------------------------------------------------------


def test_tail_gradient_sums_to_zero_where_plain_autodiff_does_not():
  z = jnp.array([[40.0, 0.0], [0.0, 40.0], [-3.0, 37.0]], jnp.float64)
  y = jnp.array([0, 1, 1])
  g = jax.grad(lambda z: sj.cross_entropy_with_integer_labels(z, y, reduction="sum"))(z)
  p = np.exp(-40.0) / (1 + np.exp(-40.0))
  np.testing.assert_allclose(g[0], [-p, p], rtol=1e-14)
  np.testing.assert_allclose(np.abs(np.sum(g, -1)), 0.0, atol=4 * np.finfo(float).eps * p)
  t = jax.nn.one_hot(y, 2, dtype=jnp.float64)
  gs = jax.grad(lambda z: sj.cross_entropy(z, t, reduction="sum"))(z)
  np.testing.assert_allclose(gs, g, rtol=1e-14)
  np.testing.assert_allclose(sj.cross_entropy_grad(z, t), g, rtol=1e-14)
  # plain autodiff of jax.nn.log_softmax returns 0 for the target entry: its rows sum to p
  plain = jax.grad(lambda z: -jnp.sum(t * jax.nn.log_softmax(z)))(z)
  assert float(plain[0, 0]) == 0.0 and float(np.sum(plain[0])) == pytest.approx(p)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("scale", [1e4, 1e30])
def test_huge_logits(rng, dtype, scale):
  z = (jnp.asarray(rng.normal(size=(4, 6))) * scale).astype(dtype)
  y = jnp.asarray(rng.integers(0, 6, 4))
  t = jax.nn.one_hot(y, 6, dtype=dtype)
  for f in (lambda z: sj.cross_entropy_with_integer_labels(z, y, label_smoothing=0.1),
            lambda z: sj.cross_entropy(z, t, label_smoothing=0.1)):
    val, g = jax.value_and_grad(f)(z)
    assert np.isfinite(float(val)) and np.all(np.isfinite(f64(g)))
  per = sj.cross_entropy_with_integer_labels(z, y, reduction="none")
  np.testing.assert_allclose(per, ref.torch_cross_entropy(f64(z), np.asarray(y), reduction="none"),
                             rtol=1e-6)


def test_neg_inf_logits_with_zero_target():
  z = jnp.array([[1.0, -jnp.inf, 0.0], [2.0, 0.5, -jnp.inf]], jnp.float64)
  t = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], jnp.float64)
  y = jnp.array([0, 1])
  soft = lambda z: sj.cross_entropy(z, t)  # noqa: E731
  hard = lambda z: sj.cross_entropy_with_integer_labels(z, y)  # noqa: E731
  for f in (soft, hard):
    assert np.isfinite(float(f(z)))
    for d in (jax.grad, jax.jacrev, jax.hessian):
      out = d(f)(z)
      assert not np.any(np.isnan(out)), (f, d)
    g = jax.grad(f)(z)
    assert float(g[0, 1]) == 0.0 and float(g[1, 2]) == 0.0
  np.testing.assert_allclose(soft(z), ref.cross_entropy(z, t).mean(), rtol=1e-14)
  np.testing.assert_allclose(hard(z), soft(z), rtol=1e-14)
  # optax 0.2.8 gives NaN here; ours does not
  assert np.isnan(float(optax.softmax_cross_entropy(z, t).mean()))


@pytest.mark.parametrize("how", ["neg_inf", "where"])
def test_row_without_valid_class(how):
  z = jnp.array([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [3.0, 1.0, 1.0]], jnp.float64)
  where = jnp.array([[True] * 3, [False] * 3, [True] * 3])
  if how == "neg_inf":
    z = jnp.where(where, z, -jnp.inf)
    where = None
  y = jnp.array([1, 2, 0])
  t = jax.nn.one_hot(y, 3, dtype=jnp.float64)
  keep = np.array([0, 2])
  zk = z[keep]
  cases = [
      (lambda z: sj.cross_entropy(z, t, where=where), ref.cross_entropy(zk, t[keep]).mean()),
      (lambda z: sj.cross_entropy_with_integer_labels(z, y, where=where),
       ref.torch_cross_entropy(zk, np.asarray(y)[keep])),
      (lambda z: sj.cross_entropy_with_integer_labels(z, jnp.array([1, 99, 0]), where=where),
       ref.torch_cross_entropy(zk, np.asarray(y)[keep])),  # whatever the empty row's label
  ]
  for f, want in cases:
    np.testing.assert_allclose(f(z), want, rtol=1e-14)  # empty row not in the mean
    for d in (jax.grad, jax.jacrev, jax.hessian):
      out = np.asarray(d(f)(z))
      assert not np.any(np.isnan(out))
      np.testing.assert_array_equal(out[1], 0.0)


def test_masked_classes_equal_subset(rng):
  z = logits(rng, (3, 6), jnp.float64)
  where = jnp.array([True, False, True, True, False, True])
  y = jnp.array([0, 3, 5])
  got = sj.cross_entropy_with_integer_labels(z, y, where=where, label_smoothing=0.2,
                                             reduction="none")
  sub = z[:, where]
  want = sj.cross_entropy_with_integer_labels(sub, jnp.array([0, 2, 3]), label_smoothing=0.2,
                                              reduction="none")
  np.testing.assert_allclose(got, want, rtol=1e-14)
  g = jax.grad(lambda z: sj.cross_entropy_with_integer_labels(z, y, where=where))(z)
  np.testing.assert_array_equal(g[:, ~where], 0.0)


def test_invalid_labels_give_nan_not_a_wrong_number(rng):
  z = logits(rng, (5, 4), jnp.float32)
  y = jnp.array([0, 4, -1, 2, 1])
  f = jax.jit(lambda z: sj.cross_entropy_with_integer_labels(z, y, reduction="none"))
  per = f(z)
  assert np.isnan(per[1]) and np.isnan(per[2])
  assert np.all(np.isfinite(per[jnp.array([0, 3, 4])]))
  g = jax.grad(lambda z: jnp.sum(f(z)))(z)
  assert np.all(np.isnan(g[1])) and np.all(np.isnan(g[2]))
  assert np.all(np.isfinite(g[0]))
  # a label pointing at a masked class, and target mass on a masked class
  where = jnp.array([True, True, False, True])
  per = sj.cross_entropy_with_integer_labels(z, jnp.array([2, 0, 1, 3, 2]), where=where,
                                             reduction="none")
  assert np.isnan(per[0]) and np.isnan(per[4]) and np.isfinite(per[1])
  t = jax.nn.one_hot(jnp.array([2, 0, 1, 3, 2]), 4)
  per = sj.cross_entropy(z, t, where=where, reduction="none")
  assert np.isnan(per[0]) and np.isfinite(per[1])
  assert np.all(np.isnan(sj.cross_entropy_grad(jnp.where(where, z, -jnp.inf), t)[0]))
  # ignore_index is not invalid
  per = sj.cross_entropy_with_integer_labels(z, jnp.array([-100, 0, 1, 2, 3]), ignore_index=-100,
                                             reduction="none")
  assert float(per[0]) == 0.0 and np.all(np.isfinite(per))


def test_float16_many_classes(rng):
  c = 2**17
  z = logits(rng, (2, c), jnp.float16, 4.0)
  y = jnp.array([5, c - 1])
  val, g = jax.value_and_grad(sj.cross_entropy_with_integer_labels)(z, y)
  assert val.dtype == jnp.float32 and g.dtype == jnp.float16
  np.testing.assert_allclose(val, ref.torch_cross_entropy(f64(z), np.asarray(y)), rtol=1e-5)
  assert np.all(np.isfinite(f64(g)))
  want = ref.softmax(z)
  want[np.arange(2), np.asarray(y)] -= 1
  want /= 2
  np.testing.assert_allclose(f64(g), want, rtol=2e-3, atol=1e-7)
  flat = jnp.zeros((2, c), jnp.float16)
  val, g = jax.value_and_grad(sj.cross_entropy_with_integer_labels)(flat, y)
  np.testing.assert_allclose(val, np.log(c), rtol=1e-6)
  assert np.all(np.isfinite(f64(g)))


def test_all_ignored_mean_is_zero(rng):
  z = logits(rng, (3, 4), jnp.float32)
  y = jnp.full((3,), -1)
  val, g = jax.value_and_grad(
      lambda z: sj.cross_entropy_with_integer_labels(z, y, ignore_index=-1))(z)
  assert float(val) == 0.0
  np.testing.assert_array_equal(g, 0.0)


def test_vmap(rng):
  z = logits(rng, (3, 4, 5), jnp.float32)
  y = jnp.asarray(rng.integers(0, 5, (3, 4)))
  def summed(z, y):
    return sj.cross_entropy_with_integer_labels(z, y, reduction="sum")

  mapped = jax.vmap(summed)(z, y)
  np.testing.assert_allclose(mapped.sum(), summed(z, y), rtol=1e-6)
  gv = jax.vmap(jax.grad(summed))(z, y)
  g = jax.grad(summed)(z, y)
  np.testing.assert_allclose(gv, g, rtol=1e-6)


# --- binary cross-entropy -------------------------------------------------------


def test_binary_cross_entropy(rng):
  z = logits(rng, (20,), jnp.float64, 5.0)
  y = jnp.asarray(rng.integers(0, 2, 20)).astype(jnp.float64)
  np.testing.assert_allclose(sj.binary_cross_entropy(z, y, reduction="none"),
                             ref.binary_cross_entropy(z, y), rtol=1e-12)
  h = 1 / (1 + np.exp(-f64(z)))
  np.testing.assert_allclose(jax.grad(sj.binary_cross_entropy)(z, y), (h - f64(y)) / 20,
                             rtol=1e-12)  # lecture: h − y
  # the 2-class softmax cross-entropy of [z, 0] with label "class 0 ⇔ y = 1"
  two = jnp.stack([z, jnp.zeros_like(z)], -1)
  np.testing.assert_allclose(
      sj.binary_cross_entropy(z, y, reduction="none"),
      sj.cross_entropy_with_integer_labels(two, (1 - y).astype(jnp.int32), reduction="none"),
      rtol=1e-12, atol=1e-15)
  check_grads(lambda z: sj.binary_cross_entropy(z, y), (z,), order=2, modes=["rev"])
  big = jnp.array([1e30, -1e30, 1e30], jnp.float32)
  val = sj.binary_cross_entropy(big, jnp.array([1.0, 0.0, 0.0]), reduction="none")
  np.testing.assert_array_equal(val, np.array([0.0, 0.0, 1e30], np.float32))
  g = jax.grad(sj.binary_cross_entropy)(jnp.array([jnp.inf, -jnp.inf]), jnp.array([1.0, 0.0]))
  np.testing.assert_array_equal(g, 0.0)


# --- errors ----------------------------------------------------------------------


def test_errors_name_the_argument():
  z = jnp.zeros((8, 10))
  with pytest.raises(TypeError, match="logits must be a floating-point array"):
    sj.cross_entropy_with_integer_labels(jnp.zeros((8, 10), jnp.int32), jnp.zeros(8, jnp.int32))
  with pytest.raises(TypeError, match="logits must be a floating-point array"):
    sj.cross_entropy(jnp.zeros((2, 2), bool), jnp.zeros((2, 2)))
  with pytest.raises(ValueError, match=r"labels has shape \(8, 1\) but logits has shape \(8, 10\) "
                     r"with axis=-1, so labels must have shape \(8,\)"):
    sj.cross_entropy_with_integer_labels(z, jnp.zeros((8, 1), jnp.int32))
  with pytest.raises(TypeError, match="labels must be an integer array"):
    sj.cross_entropy_with_integer_labels(z, jnp.zeros(8))
  with pytest.raises(ValueError,
                     match=r"targets has shape \(8, 9\) but logits has shape \(8, 10\)"):
    sj.cross_entropy(z, jnp.zeros((8, 9)))
  with pytest.raises(TypeError, match="targets must be a floating array"):
    sj.cross_entropy(z, jnp.zeros((8, 10), jnp.int32))
  with pytest.raises(ValueError,
                     match=r"class_weights has shape \(9,\) .* must have shape \(10,\)"):
    sj.cross_entropy_with_integer_labels(z, jnp.zeros(8, jnp.int32), class_weights=jnp.ones(9))
  with pytest.raises(ValueError, match=r"where has shape \(8, 3\) but logits has shape \(8, 10\)"):
    sj.cross_entropy(z, z, where=jnp.ones((8, 3), bool))
  with pytest.raises(ValueError, match="reduction must be one of"):
    sj.cross_entropy(z, z, reduction="avg")
  for eps in (-0.1, 1.5):
    with pytest.raises(ValueError, match=r"label_smoothing must lie in \[0, 1\]"):
      sj.cross_entropy_with_integer_labels(z, jnp.zeros(8, jnp.int32), label_smoothing=eps)
  with pytest.raises(ValueError, match=r"labels has shape \(4,\) but logits has shape \(3,\)"):
    sj.binary_cross_entropy(jnp.zeros(3), jnp.zeros(4))
  with pytest.raises(TypeError, match="ignore_index must be an int"):
    sj.cross_entropy_with_integer_labels(z, jnp.zeros(8, jnp.int32), ignore_index=1.5)


def test_validate_labels():
  np.testing.assert_array_equal(sj.validate_labels([0, 1, 2], 3), [0, 1, 2])
  np.testing.assert_array_equal(sj.validate_labels([0, -100, 2], 3, ignore_index=-100),
                                [0, -100, 2])
  with pytest.raises(ValueError, match=r"2 label\(s\) outside \[0, 3\): labels\[1\] = 3, "
                     r"labels\[3\] = -1"):
    sj.validate_labels([0, 3, 1, -1], 3)
  with pytest.raises(ValueError, match=r"labels\[1, 0\] = 7"):
    sj.validate_labels([[0, 1], [7, 2]], 3)
  with pytest.raises(TypeError, match="labels must be integers"):
    sj.validate_labels([0.0, 1.0], 3)


@pytest.mark.parametrize("z_loss,cap", [(1e-2, None), (0.0, 3.0), (1e-3, 5.0)])
def test_z_loss_and_logit_softcap_float64(rng, z_loss, cap):
  """ξ + λ_z lse² on soft-capped logits, against jax.grad of the formula written out."""
  import softmax_jax as sj

  z = jnp.asarray(rng.normal(size=(7, 6)) * 4).at[2, 3].set(-jnp.inf)
  t = jnp.asarray(rng.integers(0, 6, 7)).at[2].set(0)

  def naive(z):
    zc = z if cap is None else jnp.where(jnp.isneginf(z), -jnp.inf, cap * jnp.tanh(z / cap))
    lse = jax.nn.logsumexp(zc, axis=-1)
    return jnp.mean(lse - jnp.take_along_axis(zc, t[:, None], -1)[:, 0] + z_loss * lse**2)

  def ours(z):
    return sj.cross_entropy_with_integer_labels(z, t, z_loss=z_loss, logit_softcap=cap)

  np.testing.assert_allclose(ours(z), naive(z), rtol=1e-13)
  np.testing.assert_allclose(jax.grad(ours)(z), jax.grad(naive)(z), rtol=1e-11, atol=1e-15)


def test_z_loss_and_softcap_errors():
  import softmax_jax as sj

  z, t = jnp.zeros((2, 3)), jnp.zeros(2, jnp.int32)
  with pytest.raises(ValueError, match="z_loss must be a finite number >= 0"):
    sj.cross_entropy_with_integer_labels(z, t, z_loss=-1.0)
  with pytest.raises(ValueError, match="logit_softcap must be a finite number > 0"):
    sj.cross_entropy_with_integer_labels(z, t, logit_softcap=0)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_unmasked_probability_loss_takes_the_masked_route_only_when_needed(rng, eps):
  """Without ``where`` the loss is computed without masking selects, unless a row is
  non-finite there (a −inf logit, say); then every row goes the masked way.  Both routes
  give the same numbers on the rows they share."""
  z = jnp.asarray(rng.normal(size=(5, 7)) * 4)
  t = jnp.asarray(rng.dirichlet(np.ones(7), 5))
  z_inf = z.at[4, 3].set(-jnp.inf)
  t_inf = t.at[4].set(t[4].at[3].set(0.0) / (1 - t[4, 3]))
  fast = sj.cross_entropy(z, t, label_smoothing=eps, reduction="none")
  mixed = sj.cross_entropy(z_inf, t_inf, label_smoothing=eps, reduction="none")
  ones = jnp.ones(z.shape, bool)
  masked = sj.cross_entropy(z, t, label_smoothing=eps, reduction="none", where=ones)
  np.testing.assert_allclose(fast[:4], mixed[:4], rtol=1e-14)
  np.testing.assert_allclose(fast, masked, rtol=1e-14)
  want = ref.cross_entropy(np.asarray(z_inf), np.asarray(t_inf), eps=eps)
  np.testing.assert_allclose(mixed, want, rtol=1e-13)
  gf = jax.grad(lambda z: sj.cross_entropy(z, t, label_smoothing=eps, reduction="sum"))(z)
  gm = jax.grad(lambda z: sj.cross_entropy(z, t, label_smoothing=eps, reduction="sum",
                                           where=ones))(z)
  np.testing.assert_allclose(gf, gm, rtol=1e-14, atol=1e-16)
