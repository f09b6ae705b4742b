"""Chunked linear cross-entropy against the materialised logits: values, gradients, memory."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softmax_jax as sj
from softmax_jax import linear_cross_entropy

from _util import matrix

# Value and derivative checks call the loss through jax.jit: linear_cross_entropy is a
# custom JVP over chunk loops with no jit of its own, and each transformation of it run
# eagerly compiles op by op (minutes for a Hessian on 2 cores).  Argument errors and host
# (NumPy) labels are tested on the plain function.
_lce = jax.jit(linear_cross_entropy, static_argnames=(
    "chunk_size", "ignore_index", "label_smoothing", "z_loss", "logit_softcap", "reduction",
    "return_lse"))


def _reference(h, w, t, *, b=None, ignore_index=None, eps=0.0, z_loss=0.0, softcap=None,
               reduction="mean", lse_out=False):
  """The materialised formula with PyTorch's semantics, written out and differentiated by
  JAX (float64 when the inputs are): K valid (finite) classes, empty rows not counted."""
  z = h @ w + (0 if b is None else b)
  if softcap is not None:
    z = jnp.where(z == -jnp.inf, -jnp.inf, softcap * jnp.tanh(z / softcap))
  valid = z != -jnp.inf
  k = valid.sum(-1)
  nonempty = k > 0
  lse = jax.nn.logsumexp(jnp.where(nonempty[:, None], z, 0), axis=-1)
  neg_log_y = lse[:, None] - z
  is_class = (t >= 0) & (t < w.shape[1])
  tt = jnp.where(is_class, t, 0)
  nll = jnp.take_along_axis(neg_log_y, tt[:, None], axis=-1)[:, 0]
  smooth = eps / jnp.maximum(k, 1) * jnp.sum(jnp.where(valid, neg_log_y, 0), -1)
  loss = (1 - eps) * nll + smooth + z_loss * lse**2
  counted = nonempty if ignore_index is None else nonempty & (t != ignore_index)
  bad = counted & ~(is_class & jnp.take_along_axis(valid, tt[:, None], axis=-1)[:, 0])
  loss = jnp.where(bad, jnp.nan, jnp.where(counted, loss, 0.0))
  if reduction == "sum":
    loss = loss.sum()
  elif reduction == "mean":
    loss = loss.sum() / jnp.maximum(counted.sum(), 1)
  return (loss, jnp.where(counted, lse, 0.0)) if lse_out else loss


def _problem(rng, n=37, hdim=6, v=29):
  h = jnp.asarray(rng.normal(size=(n, hdim)))
  w = jnp.asarray(rng.normal(size=(hdim, v)))
  b = jnp.asarray(rng.normal(size=v))
  t = jnp.asarray(rng.integers(0, v, n))
  return h, w, b, t


OPTIONS = [
    {},
    {"b": True},
    {"ignore_index": 3, "b": True},
    {"eps": 0.1},
    {"z_loss": 1e-3},
    {"softcap": 5.0},
    {"eps": 0.2, "z_loss": 1e-2, "softcap": 3.0, "ignore_index": 7, "b": True},
    # −inf bias entries (vocabulary padding): K counts the valid classes only
    {"b": "padded", "eps": 0.1},
    {"b": "padded", "softcap": 5.0},
    {"b": "padded", "eps": 0.2, "z_loss": 1e-2, "softcap": 3.0, "ignore_index": 7},
]

PADDED = [2, 11, 28]  # the −inf columns of a padded bias


@pytest.mark.x64
@pytest.mark.parametrize("opts,chunk_reduction",
                         matrix(OPTIONS, [(1, "mean"), (8, "sum"), (100, "mean")]))
def test_float64_value_and_gradients_match_the_materialised_loss(rng, opts, chunk_reduction):
  chunk, reduction = chunk_reduction
  h, w, b, t = _problem(rng)
  if opts.get("b") == "padded":
    b = b.at[jnp.array(PADDED)].set(-jnp.inf)
    t = jnp.where(jnp.isin(t, jnp.array(PADDED)), 0, t)
  if "ignore_index" in opts:
    t = t.at[::5].set(opts["ignore_index"])
  bias = b if opts.get("b") else None
  kw = dict(ignore_index=opts.get("ignore_index"), label_smoothing=opts.get("eps", 0.0),
            z_loss=opts.get("z_loss", 0.0), logit_softcap=opts.get("softcap"),
            reduction=reduction)
  ref_kw = dict(ignore_index=opts.get("ignore_index"), eps=opts.get("eps", 0.0),
                z_loss=opts.get("z_loss", 0.0), softcap=opts.get("softcap"),
                reduction=reduction)

  def ours(h, w, b):
    return _lce(h, w, t, bias=b if bias is not None else None,
                                chunk_size=chunk, **kw)

  @jax.jit
  def ref(h, w, b):
    return _reference(h, w, t, b=b if bias is not None else None, **ref_kw)

  np.testing.assert_allclose(ours(h, w, b), ref(h, w, b), rtol=1e-12)
  got, want = jax.grad(ours, (0, 1, 2))(h, w, b), jax.grad(ref, (0, 1, 2))(h, w, b)
  assert all(np.isfinite(a).all() for a in got)
  chex.assert_trees_all_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.x64
def test_matches_the_package_loss_and_returns_lse(rng):
  h, w, b, t = _problem(rng)
  loss, lse = _lce(h, w, t, bias=b, chunk_size=5, reduction="none",
                                   return_lse=True)
  np.testing.assert_allclose(loss, sj.cross_entropy_with_integer_labels(h @ w + b, t,
                                                                       reduction="none"),
                             rtol=1e-13)
  np.testing.assert_allclose(lse, jax.nn.logsumexp(h @ w + b, axis=-1), rtol=1e-14)


def test_leading_dims_jit_and_bad_labels(rng):
  h, w, _, t = _problem(rng, n=12)
  f = jax.jit(lambda h: _lce(h, w, t.reshape(3, 4), reduction="none"))
  assert f(h.reshape(3, 4, -1)).shape == (3, 4)
  bad = t.at[2].set(w.shape[1])
  loss = _lce(h, w, bad, reduction="none")
  assert np.isnan(loss[2]) and np.isfinite(np.delete(np.asarray(loss), 2)).all()
  assert np.isnan(jax.grad(lambda h: _lce(h, w, bad))(h)).any()
  neg = _lce(h, w, t.at[0].set(-1), reduction="none")
  assert np.isnan(neg[0])


def test_errors(rng):
  h, w, b, t = _problem(rng)
  with pytest.raises(ValueError, match=r"weight has shape \(5, 29\) but hidden has shape"):
    linear_cross_entropy(h, w[:5], t)
  with pytest.raises(ValueError, match="labels must be integers of shape"):
    linear_cross_entropy(h, w, t[:3])
  with pytest.raises(ValueError, match=r"bias has shape \(3,\)"):
    linear_cross_entropy(h, w, t, bias=b[:3])
  with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
    linear_cross_entropy(h, w, t, chunk_size=0)
  with pytest.raises(ValueError, match="z_loss must be"):
    linear_cross_entropy(h, w, t, z_loss=-1.0)
  with pytest.raises(ValueError, match="logit_softcap must be"):
    linear_cross_entropy(h, w, t, logit_softcap=0.0)


def _temp_bytes(fn, *args):
  """Internals: the compiled program's temporary memory."""
  return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.internals
@pytest.mark.parametrize("reduction,return_lse", [("mean", False), ("none", False),
                                                   ("sum", True)])
def test_memory_and_agreement_at_2048x256x32768(reduction, return_lse):
  """CPU target: reverse mode's temporary memory far below the [N, V] float32 logits (the
  derivative is a custom JVP whose transpose recomputes each chunk), results within 1e-5."""
  n, hdim, v = 2048, 256, 32768
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  h = jax.random.normal(k1, (n, hdim), jnp.float32)
  w = jax.random.normal(k2, (hdim, v), jnp.float32) / 16
  t = jax.random.randint(k3, (n,), 0, v)

  def total(out):  # a scalar from every output, so each one's cotangent flows
    if return_lse:
      out = out[0] + 1e-3 * jnp.sum(out[1])
    return jnp.sum(out)

  def chunked(h, w):
    return total(linear_cross_entropy(h, w, t, reduction=reduction, return_lse=return_lse))

  def materialised(h, w):
    z = h @ w
    loss = sj.cross_entropy_with_integer_labels(z, t, reduction=reduction)
    return total((loss, jax.nn.logsumexp(z, axis=-1)) if return_lse else loss)

  ours = jax.value_and_grad(chunked, (0, 1))
  logits_bytes = n * v * 4
  assert _temp_bytes(ours, h, w) <= 0.2 * logits_bytes, _temp_bytes(ours, h, w)
  (a, (ga_h, ga_w)) = jax.jit(ours)(h, w)
  (b, (gb_h, gb_w)) = jax.jit(jax.value_and_grad(materialised, (0, 1)))(h, w)
  np.testing.assert_allclose(a, b, rtol=1e-5)
  for x, y in ((ga_h, gb_h), (ga_w, gb_w)):
    assert float(jnp.linalg.norm(x - y) / jnp.linalg.norm(y)) < 1e-5


def test_skipped_rows_with_large_logits_keep_the_gradient_finite():
  h = jnp.ones((4, 2), jnp.float32) * 30.0
  w = jnp.ones((2, 8), jnp.float32) * 2.0  # logits of 120: e^120 overflows float32
  t = jnp.array([1, -100, 2, 3])

  def ours(h, w):
    return _lce(h, w, t, ignore_index=-100)

  def materialised(h, w):
    return sj.cross_entropy_with_integer_labels(h @ w, t, ignore_index=-100)

  for a, b in zip(jax.grad(ours, (0, 1))(h, w), jax.grad(materialised, (0, 1))(h, w),
                  strict=True):
    assert bool(jnp.isfinite(a).all())
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)  # exact value 0 for dh here


@pytest.mark.internals
def test_the_gpu_program_multiplies_in_bfloat16_and_holds_no_vocabulary_wide_float32_array():
  """The program handed to the GPU compiler (a CUDA lowering, which needs no GPU) keeps
  the bfloat16 matrix products with float32 accumulation and never builds an ``[N, V]``
  array or a float32 copy of ``W``: the float32 copy seen in the CPU compile comes from
  the CPU backend, which has no bfloat16 matrix product."""
  import re

  from jax import export

  n, h, v, chunk = 256, 128, 8192, 1024
  args = (jax.ShapeDtypeStruct((n, h), jnp.bfloat16), jax.ShapeDtypeStruct((h, v), jnp.bfloat16),
          jax.ShapeDtypeStruct((n,), jnp.int32))
  f = jax.jit(jax.value_and_grad(
      lambda x, w, t: sj.linear_cross_entropy(x, w, t, chunk_size=chunk), argnums=(0, 1)))
  text = export.export(f, platforms=["cuda"])(*args).mlir_module()
  arrays = {(int(a), int(b), dt) for a, b, dt in re.findall(r"tensor<(\d+)x(\d+)x(\w+)>", text)}
  assert (h, v, "bf16") in arrays  # W and dW, in their own dtype
  assert not {a for a in arrays if a[2] == "f32" and max(a[:2]) > chunk}, sorted(arrays)
  assert not {a for a in arrays if {n, v} <= set(a[:2])}  # no [N, V] logits
  dots = re.findall(r"dot_general[^\n]*tensor<\d+x\d+xbf16>, tensor<\d+x\d+xbf16>\) -> "
                    r"tensor<\d+x\d+xf32>", text)
  assert len(dots) >= 3  # forward logits, d hidden and d W: bfloat16 in, float32 out


# ---------------------------------------------------------------------------
# Argument checks and label dtypes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["-100", 1.0, True, np.bool_(True)])
def test_ignore_index_must_be_an_integer(rng, bad):
  h, w, _, t = _problem(rng)
  with pytest.raises(TypeError, match="ignore_index must be an int or None"):
    linear_cross_entropy(h, w, t, ignore_index=bad)


@pytest.mark.parametrize("dtype,ignore", [(jnp.uint8, -100), (jnp.int8, 200),
                                          (jnp.int32, 2**40)])
def test_an_ignore_index_the_label_dtype_cannot_hold_is_refused(rng, dtype, ignore):
  h, w, _, _ = _problem(rng, n=2)
  with pytest.raises(ValueError, match=f"ignore_index={ignore} cannot occur in labels of dtype"):
    linear_cross_entropy(h, w, jnp.array([0, 1], dtype), ignore_index=ignore)


@pytest.mark.x64
def test_other_options_are_checked(rng):
  h, w, _, t = _problem(rng)
  for bad in (0, -3, 2.0, True):
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
      linear_cross_entropy(h, w, t, chunk_size=bad)
  with pytest.raises(ValueError, match="z_loss must be a finite number"):
    linear_cross_entropy(h, w, t, z_loss=float("inf"))
  with pytest.raises(ValueError, match="logit_softcap must be a finite number"):
    linear_cross_entropy(h, w, t, logit_softcap=float("inf"))
  np.testing.assert_allclose(linear_cross_entropy(h, w, t, chunk_size=np.int64(2)),
                             _reference(h, w, t), rtol=1e-12)


@pytest.mark.x64
def test_labels_beyond_32_bits_are_invalid_not_wrapped(rng):
  h, w, _, _ = _problem(rng, n=3)
  labels = jnp.array([2**32 + 1, 1, -(2**33)], jnp.int64)
  loss = _lce(h, w, labels, reduction="none", chunk_size=4)
  assert np.isnan(loss[0]) and np.isnan(loss[2])
  np.testing.assert_allclose(loss[1], _reference(h[1:2], w, labels[1:2]), rtol=1e-12)
  g = jax.grad(lambda h: _lce(h, w, labels, reduction="sum"))(h)
  assert np.isnan(g[0]).all() and np.isfinite(g[1]).all()


def test_numpy_int64_labels_with_x64_off_are_not_wrapped():
  h = jnp.ones((2, 3), jnp.float32)
  w = jnp.zeros((3, 4), jnp.float32)
  loss = linear_cross_entropy(h, w, np.array([2**32 + 1, 1], np.int64), reduction="none")
  assert np.isnan(loss[0])
  np.testing.assert_allclose(loss[1], np.log(4.0), rtol=1e-6)


@pytest.mark.x64
def test_uint8_labels_reach_class_255(rng):
  h, w, _, _ = _problem(rng, n=4, v=256)
  labels = jnp.array([255, 0, 128, 255], jnp.uint8)
  got = _lce(h, w, labels, reduction="none", chunk_size=100, ignore_index=128)
  want = _reference(h, w, labels.astype(jnp.int32), reduction="none", ignore_index=128)
  np.testing.assert_allclose(got, want, rtol=1e-12)
  assert got[2] == 0


# ---------------------------------------------------------------------------
# Numerics: the tail, empty rows
# ---------------------------------------------------------------------------


@pytest.mark.x64
@pytest.mark.parametrize("chunk,padded", matrix([1, 2, 3], [False, True]))
def test_the_label_entry_keeps_the_tail(chunk, padded):
  """float64 logits [40, 0, −1], label 0: ∂ℓ/∂z_0 = −(1 − y_0) = −(e⁻⁴⁰ + e⁻⁴¹)/s ≈ −5.8e-18
  (−e⁻⁴⁰/s ≈ −4.25e-18 when class 2 is padding), where 1 − y_0 rounds to 0."""
  h = jnp.ones((1, 1), jnp.float64)
  w = jnp.array([[40.0, 0.0, -1.0]])
  b = jnp.array([0.0, 0.0, -jnp.inf if padded else 0.0])
  t = jnp.array([0])
  tail = np.exp(-40.0) + (0.0 if padded else np.exp(-41.0))

  def f(w, b):
    return _lce(h, w, t, bias=b, chunk_size=chunk)

  dw, db = jax.grad(f, (0, 1))(w, b)
  np.testing.assert_allclose(dw[0, 0], -tail / (1 + tail), rtol=1e-14)
  np.testing.assert_allclose(db, dw[0], rtol=1e-14)
  assert abs(float(jnp.sum(dw))) <= 1e-3 * tail  # the row sums to zero to ulps of the entry
  np.testing.assert_allclose(jax.jacfwd(f)(w, b)[0, 0], dw[0, 0], rtol=1e-14)
  np.testing.assert_allclose(f(w, b), np.log1p(tail), rtol=1e-14)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_rows_without_a_valid_class_count_nothing(rng, reduction):
  h, w, b, t = _problem(rng, n=6)
  b = jnp.full_like(b, -jnp.inf)

  def f(h, w, b):
    return jnp.sum(_lce(h, w, t, bias=b, reduction=reduction,
                                        label_smoothing=0.1, z_loss=1e-2, logit_softcap=4.0,
                                        chunk_size=8))

  assert f(h, w, b) == 0
  for g in jax.grad(f, (0, 1, 2))(h, w, b):
    assert np.isfinite(g).all() and not np.any(g)
  _, lse = _lce(h, w, t, bias=b, return_lse=True)
  assert not np.any(lse)


def test_a_label_on_a_padded_class_is_nan(rng):
  h, w, b, t = _problem(rng, n=4)
  b = b.at[5].set(-jnp.inf)
  t = t.at[1].set(5)
  loss = _lce(h, w, t, bias=b, reduction="none", chunk_size=4)
  assert np.isnan(loss[1]) and np.isfinite(np.delete(np.asarray(loss), 1)).all()
  assert np.isnan(jax.grad(lambda h: _lce(h, w, t, bias=b))(h)).any()


# ---------------------------------------------------------------------------
# Forward mode and higher orders
# ---------------------------------------------------------------------------

FORWARD_OPTIONS = {
    "plain": {},
    "everything": {"ignore_index": 3, "eps": 0.2, "z_loss": 1e-2, "softcap": 4.0},
}


def _small_case(rng, padded=True):
  h, w, b, t = _problem(rng, n=5, hdim=3, v=7)
  if padded:
    b = b.at[4].set(-jnp.inf)
  return h, w, b, jnp.array([0, 3, 6, 3, 2])


def _both(t, opts, reduction, lse_out=False):
  kw = dict(ignore_index=opts.get("ignore_index"), label_smoothing=opts.get("eps", 0.0),
            z_loss=opts.get("z_loss", 0.0), logit_softcap=opts.get("softcap"))

  def ours(h, w, b):
    return _lce(h, w, t, bias=b, chunk_size=3, reduction=reduction,
                                return_lse=lse_out, **kw)

  def ref(h, w, b):
    return _reference(h, w, t, b=b, ignore_index=kw["ignore_index"], eps=kw["label_smoothing"],
                      z_loss=kw["z_loss"], softcap=kw["logit_softcap"], reduction=reduction,
                      lse_out=lse_out)

  return jax.jit(ours), jax.jit(ref)


def _close(a, b, rtol=1e-10, atol=1e-12):
  chex.assert_trees_all_close(a, b, rtol=rtol, atol=atol)


def _every_mode(f, tangents):
  """Value, JVP, linearized JVP, both Jacobians, Hessian and a vmap of ``f``, one program."""
  scales = jnp.array([0.5, 1.0, 2.0])
  args = (0, 1, 2)
  return jax.jit(lambda *p: dict(
      value=f(*p), jvp=jax.jvp(f, p, tangents)[1],
      linearize=jax.linearize(f, *p)[1](*tangents), jacfwd=jax.jacfwd(f, args)(*p),
      jacrev=jax.jacrev(f, args)(*p), hessian=jax.hessian(f, args)(*p),
      vmap=jax.vmap(lambda s: f(s * p[0], p[1], p[2]))(scales)))


@pytest.mark.x64
@pytest.mark.parametrize("name,reduction_lse", matrix(
    list(FORWARD_OPTIONS), [("mean", False), ("sum", False), ("none", False), ("none", True)]))
def test_forward_mode_and_second_order_match_autodiff_of_the_formula(rng, name, reduction_lse):
  reduction, lse_out = reduction_lse
  h, w, b, t = _small_case(rng)
  ours, ref = _both(t, FORWARD_OPTIONS[name], reduction, lse_out)
  tangents = (jnp.asarray(rng.normal(size=h.shape)), jnp.asarray(rng.normal(size=w.shape)),
              jnp.asarray(rng.normal(size=b.shape)))
  got, want = _every_mode(ours, tangents)(h, w, b), _every_mode(ref, tangents)(h, w, b)
  hess_got, hess_want = got.pop("hessian"), want.pop("hessian")
  _close(got, want)
  _close(hess_got, hess_want, rtol=1e-9)


@pytest.mark.x64
def test_grad_of_grad_and_finite_differences(rng):
  h, w, b, t = _small_case(rng)
  ours, ref = _both(t, FORWARD_OPTIONS["everything"], "mean")

  def sq_norm_of_grad(f):
    return lambda h, w, b: sum(jnp.sum(g**2) for g in jax.grad(f, (0, 1))(h, w, b))

  _close(jax.jit(jax.grad(sq_norm_of_grad(ours), (0, 1, 2)))(h, w, b),
         jax.jit(jax.grad(sq_norm_of_grad(ref), (0, 1, 2)))(h, w, b), rtol=1e-9)
  from jax.test_util import check_grads

  check_grads(lambda h, w: ours(h, w, b), (h, w), order=2, modes=("fwd", "rev"))


@pytest.mark.x64
def test_a_bad_row_keeps_its_nan_to_itself_in_second_derivatives(rng):
  """Rows are independent: a bad-label row's second derivatives are NaN (as its loss and
  gradient are), and the other rows' derivatives along its inputs are 0, not NaN."""
  h, w, _, _ = _problem(rng, n=3, hdim=5, v=5)
  t = jnp.array([0, -1, 2])
  u = jnp.array([0.3, 0.5, 0.7])

  def f(h):
    return jnp.sum(u * _lce(h, w, t, reduction="none", chunk_size=2,
                                            label_smoothing=0.1))

  assert np.isnan(jax.grad(f)(h)[1]).all() and np.isfinite(np.delete(jax.grad(f)(h), 1, 0)).all()
  hess = np.asarray(jax.hessian(f)(h))
  assert np.isnan(hess[1, :, 1, :]).all()
  assert np.isfinite(hess[[0, 2]]).all() and not hess[[0, 2], :, 1, :].any()
  good = lambda h: jnp.sum(u[::2] * _reference(h, w, t[::2], eps=0.1, reduction="none"))  # noqa: E731
  np.testing.assert_allclose(hess[::2, :, ::2, :], jax.hessian(good)(h[::2]), rtol=1e-10,
                             atol=1e-13)


def test_float32_with_x64_off():
  """The default configuration: float32, 32-bit labels, forward and reverse mode."""
  rng = np.random.default_rng(1)
  h = jnp.asarray(rng.normal(size=(9, 4)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(4, 11)), jnp.float32)
  b = jnp.asarray(rng.normal(size=11), jnp.float32).at[3].set(-jnp.inf)
  t = jnp.asarray([0, 1, 2, 4, 5, 6, 7, 8, 10], jnp.int32)
  ours, ref = _both(t, FORWARD_OPTIONS["everything"], "mean")
  v = (h * 0.5, w * 0.25, jnp.where(jnp.isfinite(b), b, 0) * 0.1)
  _close(ours(h, w, b), ref(h, w, b), rtol=1e-5, atol=1e-6)
  _close(jax.grad(ours, (0, 1, 2))(h, w, b), jax.grad(ref, (0, 1, 2))(h, w, b),
         rtol=1e-4, atol=1e-6)
  _close(jax.jvp(ours, (h, w, b), v), jax.jvp(ref, (h, w, b), v), rtol=1e-4, atol=1e-6)
  assert ours(h, w, b).dtype == jnp.float32


@pytest.mark.internals
def test_forward_mode_memory_stays_chunked():
  """jax.jvp at 2048×256×V: a few [N, chunk] buffers (logits, tangent, Jacobian of one
  chunk), the same whether V is 32768 or 65536, never an [N, V] one."""
  n, hdim = 2048, 256
  t = jnp.zeros((n,), jnp.int32)

  def fwd(h, w):
    f = lambda h, w: linear_cross_entropy(h, w, t, reduction="none")  # noqa: E731
    return jax.jvp(f, (h, w), (h, w))

  def temp(v):
    return _temp_bytes(fwd, jax.ShapeDtypeStruct((n, hdim), jnp.float32),
                       jax.ShapeDtypeStruct((hdim, v), jnp.float32))

  small, large = temp(32768), temp(65536)
  assert small <= 0.5 * n * 32768 * 4, small
  assert large <= 1.05 * small, (small, large)


def test_bfloat16_inputs_follow_the_float32_formula(rng):
  """Half precision takes the other product order for d h (bfloat16 products, float32
  sums over chunks); value, gradients and a JVP match float32 on the same rounded inputs."""
  h, w, b, t = _problem(rng, n=16, hdim=8, v=40)
  hb, wb, bb = (x.astype(jnp.bfloat16) for x in (h, w, b.at[3].set(-jnp.inf)))
  t = jnp.where(t == 3, 0, t)
  ours, _ = _both(t, FORWARD_OPTIONS["everything"], "mean")
  ref = lambda h, w, b: ours(h.astype(jnp.float32), w.astype(jnp.float32),  # noqa: E731
                             b.astype(jnp.float32))
  assert ours(hb, wb, bb).dtype == jnp.float32
  np.testing.assert_allclose(ours(hb, wb, bb), ref(hb, wb, bb), rtol=1e-5)
  for a, c in zip(jax.grad(ours, (0, 1, 2))(hb, wb, bb), jax.grad(ref, (0, 1, 2))(hb, wb, bb),
                  strict=True):
    assert a.dtype == jnp.bfloat16
    np.testing.assert_allclose(a.astype(jnp.float32), c.astype(jnp.float32), rtol=2e-2,
                               atol=2e-3)
  tangents = (hb, wb, jnp.where(jnp.isfinite(bb), bb, 0))
  # On the CPU (no bfloat16 product) ∂ℓ/∂z stays float32 in the tangent, so the JVP is
  # float32-accurate; GPUs round it to bfloat16 for the matrix units.
  np.testing.assert_allclose(jax.jvp(ours, (hb, wb, bb), tangents)[1],
                             jax.jvp(ref, (hb, wb, bb), tangents)[1], rtol=1e-5)
