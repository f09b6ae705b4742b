"""cross_entropy_with_integer_labels (softmax_jax/losses/_integer_labels.py)."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import softmax_jax as sj
from softmax_jax import _xla_workarounds as xla_workarounds

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

# --- values --------------------------------------------------------------------


@pytest.mark.parametrize("dtype,transform", matrix(DTYPES, list(TRANSFORMS)))
def test_values_match_reference(rng, dtype, transform):
  z = logits(rng, (6, 9), dtype)
  y = jnp.asarray(rng.integers(0, 9, 6))
  per = TRANSFORMS[transform](
      lambda z, y: sj.cross_entropy_with_integer_labels(z, y, reduction="none"))(z, y)
  want = ref.torch_cross_entropy(f64(z), np.asarray(y), reduction="none")
  out_dtype = jnp.float32 if dtype in (jnp.bfloat16, jnp.float16) else dtype
  assert per.dtype == out_dtype
  assert_close(per, want, out_dtype, scale=4)


def test_agrees_with_optax(rng):
  z = logits(rng, (8, 12), jnp.float32)
  y = jnp.asarray(rng.integers(0, 12, 8))
  np.testing.assert_allclose(sj.cross_entropy_with_integer_labels(z, y, reduction="none"),
                             optax.softmax_cross_entropy_with_integer_labels(z, y), rtol=1e-6)
  g_ours = jax.grad(sj.cross_entropy_with_integer_labels)(z, y)
  g_optax = jax.grad(lambda z: optax.softmax_cross_entropy_with_integer_labels(z, y).mean())(z)
  np.testing.assert_allclose(g_ours, g_optax, rtol=1e-5, atol=1e-8)


@pytest.mark.x64
@pytest.mark.parametrize("axis", [0, 1])
def test_class_axis(rng, axis):
  z = logits(rng, (5, 7), jnp.float64)
  y = jnp.asarray(rng.integers(0, z.shape[axis], z.shape[1 - axis]))
  moved = np.moveaxis(f64(z), axis, -1)
  np.testing.assert_allclose(
      sj.cross_entropy_with_integer_labels(z, y, axis=axis, reduction="none"),
      ref.torch_cross_entropy(moved, np.asarray(y), reduction="none"), rtol=1e-13)


# --- PyTorch semantics ------------------------------------------------------------


@pytest.mark.x64
@pytest.mark.parametrize("reduction,eps,weighted",
                         matrix(["mean", "sum", "none"], [0.0, 0.2], [False, True]))
def test_torch_semantics(rng, reduction, eps, weighted):
  """Values against PyTorch's formula as a float64 loop; derivatives (in the logits and
  the class weights) against autodiff of the formula written out."""
  z = logits(rng, (10, 5), jnp.float64)
  y = rng.integers(0, 5, 10)
  y[[2, 7]] = -100
  w = jnp.asarray(rng.random(5) + 0.5) if weighted else None
  got = sj.cross_entropy_with_integer_labels(
      z, jnp.asarray(y), class_weights=w, ignore_index=-100, label_smoothing=eps,
      reduction=reduction)
  want = ref.torch_cross_entropy(f64(z), y, None if w is None else f64(w), -100, eps,
                                 reduction)
  np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)

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

  def ours(z, w_arr):
    return sj.cross_entropy_with_integer_labels(
        z, jnp.asarray(y), class_weights=w_arr, ignore_index=-100, label_smoothing=eps,
        reduction=reduction)

  argnums = (0, 1) if weighted else 0  # class weights are differentiable too
  chex.assert_trees_all_close(jax.jacrev(ours, argnums)(z, w), jax.jacrev(naive, argnums)(z, w),
                              rtol=1e-11, atol=1e-14)


@pytest.mark.x64
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


@pytest.mark.x64
def test_gradient_three_ways(rng):
  """∂ξ/∂z against autodiff of the naive ``−log softmax(z)_t``, the float64 NumPy
  ``y − onehot(t)``, and central finite differences (orders 1 and 2)."""
  z = logits(rng, (7,), jnp.float64)
  label = 3
  ours = lambda z: sj.cross_entropy_with_integer_labels(z[None], jnp.array([label]))  # noqa: E731
  naive = lambda z: -jax.nn.log_softmax(z)[label]  # noqa: E731
  want = jax.grad(naive)(z)
  np.testing.assert_allclose(jax.grad(ours)(z), want, rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(jax.jacfwd(ours)(z), want, rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(jax.grad(ours)(z), ref.softmax(f64(z)) - np.eye(7)[label],
                             rtol=1e-12, atol=1e-15)  # the lecture's y − t
  check_grads(ours, (z,), order=2, modes=["rev"], atol=1e-6, rtol=1e-6)


@pytest.mark.x64
def test_hessian_is_softmax_jacobian(rng):
  z = logits(rng, (6,), jnp.float64)
  loss = lambda z: sj.cross_entropy_with_integer_labels(z, jnp.array(2))  # noqa: E731
  assert_hessian_is_softmax_jacobian(loss, z, logits(rng, (6,), jnp.float64, 1.0))


@pytest.mark.internals
def test_reverse_mode_keeps_at_most_one_logits_sized_temporary(rng):
  """Internals (compiled memory): under ``jax.jit`` the gradient of the custom-JVP loss is
  written in the pass that recomputes ``y``.  With XLA:CPU's YNNPACK reduction fusion no
  ``[N, C]`` buffer is allocated besides the gradient; with it turned off (the
  workaround of jaxlib 0.10.2's miscompilation that ``import softmax_jax`` applies, see
  ``softmax_jax/_xla_workarounds.py``) XLA stores ``e^{z − m}`` once for the two row sums
  that read it, and never more than that."""
  n, c = 512, 1024
  z = logits(rng, (n, c), jnp.float32)
  y = jnp.asarray(rng.integers(0, c, n))
  loss = lambda z: sj.cross_entropy_with_integer_labels(z, y)  # noqa: E731
  compiled = jax.jit(jax.value_and_grad(loss)).lower(z).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  without_ynn_reduce = xla_workarounds.FLAG in os.environ.get("XLA_FLAGS", "")
  buffers = 1 if without_ynn_reduce and jax.default_backend() == "cpu" else 0
  assert temp <= (buffers + 0.05) * n * c * 4, temp


# --- numerics ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype,scale", matrix([jnp.float32, jnp.float64], [1e4, 1e30]))
def test_huge_logits(rng, dtype, scale):
  z = (jnp.asarray(rng.normal(size=(4, 6))) * scale).astype(dtype)
  y = jnp.asarray(rng.integers(0, 6, 4))
  val, g = jax.value_and_grad(
      lambda z: sj.cross_entropy_with_integer_labels(z, y, label_smoothing=0.1))(z)
  assert np.isfinite(float(val)) and np.all(np.isfinite(f64(g)))
  per = sj.cross_entropy_with_integer_labels(z, y, reduction="none")
  np.testing.assert_allclose(per, ref.torch_cross_entropy(f64(z), np.asarray(y),
                                                          reduction="none"), rtol=1e-6)


@pytest.mark.x64
def test_neg_inf_logits():
  z = jnp.array([[1.0, -jnp.inf, 0.0], [2.0, 0.5, -jnp.inf]], jnp.float64)
  y = jnp.array([0, 1])
  f = lambda z: sj.cross_entropy_with_integer_labels(z, y)  # noqa: E731
  t = jax.nn.one_hot(y, 3, dtype=jnp.float64)
  np.testing.assert_allclose(f(z), ref.cross_entropy(f64(z), f64(t)).mean(), rtol=1e-14)
  assert_finite_derivatives(f, z)
  g = jax.grad(f)(z)
  assert float(g[0, 1]) == 0.0 and float(g[1, 2]) == 0.0


@pytest.mark.x64
@pytest.mark.parametrize("how", ["neg_inf", "where"])
def test_row_without_valid_class(how):
  """The empty row is not in the mean, has zero derivatives, whatever its label."""
  z, where = logits_with_an_empty_row(how)
  keep = np.array([0, 2])
  want = ref.torch_cross_entropy(f64(z)[keep], np.array([1, 0]))
  for labels in (jnp.array([1, 2, 0]), jnp.array([1, 99, 0])):
    f = lambda z, y=labels: sj.cross_entropy_with_integer_labels(z, y, where=where)  # noqa: E731
    np.testing.assert_allclose(f(z), want, rtol=1e-14)
    for d in (jax.grad, jax.hessian):
      out = np.asarray(d(f)(z))
      assert not np.any(np.isnan(out))
      np.testing.assert_array_equal(out[1], 0.0)


@pytest.mark.x64
def test_masked_classes_equal_subset(rng):
  z = logits(rng, (3, 6), jnp.float64)
  where = jnp.array([True, False, True, True, False, True])
  y = jnp.array([0, 3, 5])
  got = sj.cross_entropy_with_integer_labels(z, y, where=where, label_smoothing=0.2,
                                             reduction="none")
  want = sj.cross_entropy_with_integer_labels(z[:, where], jnp.array([0, 2, 3]),
                                              label_smoothing=0.2, reduction="none")
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
  # a label pointing at a masked class
  where = jnp.array([True, True, False, True])
  per = sj.cross_entropy_with_integer_labels(z, jnp.array([2, 0, 1, 3, 2]), where=where,
                                             reduction="none")
  assert np.isnan(per[0]) and np.isnan(per[4]) and np.isfinite(per[1])
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
  want = ref.softmax(f64(z))
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

  np.testing.assert_allclose(jax.vmap(summed)(z, y).sum(), summed(z, y), rtol=1e-6)
  np.testing.assert_allclose(jax.vmap(jax.grad(summed))(z, y), jax.grad(summed)(z, y),
                             rtol=1e-6)


@pytest.mark.x64
@pytest.mark.parametrize("z_loss,cap", [(1e-2, None), (0.0, 3.0), (1e-3, 5.0)])
def test_z_loss_and_logit_softcap(rng, z_loss, cap):
  """ξ + λ_z lse² on soft-capped logits, against jax.grad of the formula written out."""
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


# --- errors ----------------------------------------------------------------------


def test_errors_name_the_argument():
  z = jnp.zeros((8, 10))
  t8 = jnp.zeros(8, jnp.int32)
  with pytest.raises(TypeError, match="logits must be a floating-point array"):
    sj.cross_entropy_with_integer_labels(jnp.zeros((8, 10), jnp.int32), t8)
  with pytest.raises(ValueError, match=r"labels has shape \(8, 1\) but logits has shape \(8, 10\) "
                     r"with axis=-1, so labels must have shape \(8,\)"):
    sj.cross_entropy_with_integer_labels(z, jnp.zeros((8, 1), jnp.int32))
  with pytest.raises(TypeError, match="labels must be an integer array"):
    sj.cross_entropy_with_integer_labels(z, jnp.zeros(8))
  with pytest.raises(ValueError,
                     match=r"class_weights has shape \(9,\) .* must have shape \(10,\)"):
    sj.cross_entropy_with_integer_labels(z, t8, class_weights=jnp.ones(9))
  for eps in (-0.1, 1.5):
    with pytest.raises(ValueError, match=r"label_smoothing must lie in \[0, 1\]"):
      sj.cross_entropy_with_integer_labels(z, t8, label_smoothing=eps)
  with pytest.raises(TypeError, match="ignore_index must be an int"):
    sj.cross_entropy_with_integer_labels(z, t8, ignore_index=1.5)
  with pytest.raises(ValueError, match="z_loss must be a finite number >= 0"):
    sj.cross_entropy_with_integer_labels(z, t8, z_loss=-1.0)
  with pytest.raises(ValueError, match="logit_softcap must be a finite number > 0"):
    sj.cross_entropy_with_integer_labels(z, t8, logit_softcap=0)
  with pytest.raises(TypeError, match="donate_logits must be True or False"):
    sj.cross_entropy_with_integer_labels(z, t8, donate_logits=1)
  with pytest.raises(ValueError, match="reduction must be one of"):
    sj.cross_entropy_with_integer_labels(z, t8, reduction="avg")
