"""Chunked linear cross-entropy against the materialised logits: values, gradients, memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softmax_jax as sj
from softmax_jax import linear_cross_entropy


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


@pytest.mark.parametrize("opts", OPTIONS)
@pytest.mark.parametrize("chunk,reduction", [(1, "mean"), (8, "sum"), (100, "mean")])
def test_float64_value_and_gradients_match_the_materialised_loss(rng, opts, chunk, reduction):
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
    return linear_cross_entropy(h, w, t, bias=b if bias is not None else None,
                                chunk_size=chunk, **kw)

  def ref(h, w, b):
    return _reference(h, w, t, b=b if bias is not None else None, **ref_kw)

  np.testing.assert_allclose(ours(h, w, b), ref(h, w, b), rtol=1e-12)
  got, want = jax.grad(ours, (0, 1, 2))(h, w, b), jax.grad(ref, (0, 1, 2))(h, w, b)
  for a, c in zip(got, want, strict=True):
    assert np.isfinite(a).all()
    np.testing.assert_allclose(a, c, rtol=1e-10, atol=1e-12)


def test_matches_the_package_loss_and_returns_lse(rng):
  h, w, b, t = _problem(rng)
  loss, lse = linear_cross_entropy(h, w, t, bias=b, chunk_size=5, reduction="none",
                                   return_lse=True)
  np.testing.assert_allclose(loss, sj.cross_entropy_with_integer_labels(h @ w + b, t,
                                                                       reduction="none"),
                             rtol=1e-13)
  np.testing.assert_allclose(lse, jax.nn.logsumexp(h @ w + b, axis=-1), rtol=1e-14)


def test_leading_dims_jit_and_bad_labels(rng):
  h, w, _, t = _problem(rng, n=12)
  f = jax.jit(lambda h: linear_cross_entropy(h, w, t.reshape(3, 4), reduction="none"))
  assert f(h.reshape(3, 4, -1)).shape == (3, 4)
  bad = t.at[2].set(w.shape[1])
  loss = linear_cross_entropy(h, w, bad, reduction="none")
  assert np.isnan(loss[2]) and np.isfinite(np.delete(np.asarray(loss), 2)).all()
  assert np.isnan(jax.grad(lambda h: linear_cross_entropy(h, w, bad))(h)).any()
  neg = linear_cross_entropy(h, w, t.at[0].set(-1), reduction="none")
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
  return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


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
    return linear_cross_entropy(h, w, t, ignore_index=-100)

  def materialised(h, w):
    return sj.cross_entropy_with_integer_labels(h @ w, t, ignore_index=-100)

  for a, b in zip(jax.grad(ours, (0, 1))(h, w), jax.grad(materialised, (0, 1))(h, w),
                  strict=True):
    assert bool(jnp.isfinite(a).all())
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)  # exact value 0 for dh here


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
