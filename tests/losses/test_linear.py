"""linear_cross_entropy (softmax_jax/losses/_linear.py) against the materialised logits:
values, gradients, argument checks, label dtypes, the tail and empty rows."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softmax_jax as sj
from softmax_jax import linear_cross_entropy

from _util import jitted_linear_cross_entropy, linear_problem, matrix
from reference import materialised_linear_cross_entropy as materialised

_lce = jitted_linear_cross_entropy()



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
  h, w, b, t = linear_problem(rng)
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
    return materialised(h, w, t, b=b if bias is not None else None, **ref_kw)

  np.testing.assert_allclose(ours(h, w, b), ref(h, w, b), rtol=1e-12)
  got, want = jax.grad(ours, (0, 1, 2))(h, w, b), jax.grad(ref, (0, 1, 2))(h, w, b)
  assert all(np.isfinite(a).all() for a in got)
  chex.assert_trees_all_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.x64
def test_matches_the_package_loss_and_returns_lse(rng):
  h, w, b, t = linear_problem(rng)
  loss, lse = _lce(h, w, t, bias=b, chunk_size=5, reduction="none",
                                   return_lse=True)
  np.testing.assert_allclose(loss, sj.cross_entropy_with_integer_labels(h @ w + b, t,
                                                                       reduction="none"),
                             rtol=1e-13)
  np.testing.assert_allclose(lse, jax.nn.logsumexp(h @ w + b, axis=-1), rtol=1e-14)


def test_leading_dims_jit_and_bad_labels(rng):
  h, w, _, t = linear_problem(rng, n=12)
  f = jax.jit(lambda h: _lce(h, w, t.reshape(3, 4), reduction="none"))
  assert f(h.reshape(3, 4, -1)).shape == (3, 4)
  bad = t.at[2].set(w.shape[1])
  loss = _lce(h, w, bad, reduction="none")
  assert np.isnan(loss[2]) and np.isfinite(np.delete(np.asarray(loss), 2)).all()
  assert np.isnan(jax.grad(lambda h: _lce(h, w, bad))(h)).any()
  neg = _lce(h, w, t.at[0].set(-1), reduction="none")
  assert np.isnan(neg[0])


def test_errors(rng):
  h, w, b, t = linear_problem(rng)
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


def test_skipped_rows_with_large_logits_keep_the_gradient_finite():
  h = jnp.ones((4, 2), jnp.float32) * 30.0
  w = jnp.ones((2, 8), jnp.float32) * 2.0  # logits of 120: e^120 overflows float32
  t = jnp.array([1, -100, 2, 3])

  def ours(h, w):
    return _lce(h, w, t, ignore_index=-100)

  def on_the_logits(h, w):
    return sj.cross_entropy_with_integer_labels(h @ w, t, ignore_index=-100)

  for a, b in zip(jax.grad(ours, (0, 1))(h, w), jax.grad(on_the_logits, (0, 1))(h, w),
                  strict=True):
    assert bool(jnp.isfinite(a).all())
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)  # exact value 0 for dh here


# ---------------------------------------------------------------------------
# Argument checks and label dtypes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["-100", 1.0, True, np.bool_(True)])
def test_ignore_index_must_be_an_integer(rng, bad):
  h, w, _, t = linear_problem(rng)
  with pytest.raises(TypeError, match="ignore_index must be an int or None"):
    linear_cross_entropy(h, w, t, ignore_index=bad)


@pytest.mark.parametrize("dtype,ignore", [(jnp.uint8, -100), (jnp.int8, 200),
                                          (jnp.int32, 2**40)])
def test_an_ignore_index_the_label_dtype_cannot_hold_is_refused(rng, dtype, ignore):
  h, w, _, _ = linear_problem(rng, n=2)
  with pytest.raises(ValueError, match=f"ignore_index={ignore} cannot occur in labels of dtype"):
    linear_cross_entropy(h, w, jnp.array([0, 1], dtype), ignore_index=ignore)


@pytest.mark.x64
def test_other_options_are_checked(rng):
  h, w, _, t = linear_problem(rng)
  for bad in (0, -3, 2.0, True):
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
      linear_cross_entropy(h, w, t, chunk_size=bad)
  with pytest.raises(ValueError, match="z_loss must be a finite number"):
    linear_cross_entropy(h, w, t, z_loss=float("inf"))
  with pytest.raises(ValueError, match="logit_softcap must be a finite number"):
    linear_cross_entropy(h, w, t, logit_softcap=float("inf"))
  np.testing.assert_allclose(linear_cross_entropy(h, w, t, chunk_size=np.int64(2)),
                             materialised(h, w, t), rtol=1e-12)


@pytest.mark.x64
def test_labels_beyond_32_bits_are_invalid_not_wrapped(rng):
  h, w, _, _ = linear_problem(rng, n=3)
  labels = jnp.array([2**32 + 1, 1, -(2**33)], jnp.int64)
  loss = _lce(h, w, labels, reduction="none", chunk_size=4)
  assert np.isnan(loss[0]) and np.isnan(loss[2])
  np.testing.assert_allclose(loss[1], materialised(h[1:2], w, labels[1:2]), rtol=1e-12)
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
  h, w, _, _ = linear_problem(rng, n=4, v=256)
  labels = jnp.array([255, 0, 128, 255], jnp.uint8)
  got = _lce(h, w, labels, reduction="none", chunk_size=100, ignore_index=128)
  want = materialised(h, w, labels.astype(jnp.int32), reduction="none", ignore_index=128)
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
  h, w, b, t = linear_problem(rng, n=6)
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
  h, w, b, t = linear_problem(rng, n=4)
  b = b.at[5].set(-jnp.inf)
  t = t.at[1].set(5)
  loss = _lce(h, w, t, bias=b, reduction="none", chunk_size=4)
  assert np.isnan(loss[1]) and np.isfinite(np.delete(np.asarray(loss), 1)).all()
  assert np.isnan(jax.grad(lambda h: _lce(h, w, t, bias=b))(h)).any()
