"""The chunk loops of linear_cross_entropy (softmax_jax/losses/_linear_chunks.py): memory,
the compiled GPU program, forward mode, higher orders and the half-precision product order."""

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

  def on_the_logits(h, w):
    z = h @ w
    loss = sj.cross_entropy_with_integer_labels(z, t, reduction=reduction)
    return total((loss, jax.nn.logsumexp(z, axis=-1)) if return_lse else loss)

  ours = jax.value_and_grad(chunked, (0, 1))
  logits_bytes = n * v * 4
  assert _temp_bytes(ours, h, w) <= 0.2 * logits_bytes, _temp_bytes(ours, h, w)
  (a, (ga_h, ga_w)) = jax.jit(ours)(h, w)
  (b, (gb_h, gb_w)) = jax.jit(jax.value_and_grad(on_the_logits, (0, 1)))(h, w)
  np.testing.assert_allclose(a, b, rtol=1e-5)
  for x, y in ((ga_h, gb_h), (ga_w, gb_w)):
    assert float(jnp.linalg.norm(x - y) / jnp.linalg.norm(y)) < 1e-5


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
# Forward mode and higher orders
# ---------------------------------------------------------------------------

FORWARD_OPTIONS = {
    "plain": {},
    "everything": {"ignore_index": 3, "eps": 0.2, "z_loss": 1e-2, "softcap": 4.0},
}


def _small_case(rng, padded=True):
  h, w, b, t = linear_problem(rng, n=5, hdim=3, v=7)
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
    return materialised(h, w, t, b=b, ignore_index=kw["ignore_index"], eps=kw["label_smoothing"],
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
  h, w, _, _ = linear_problem(rng, n=3, hdim=5, v=5)
  t = jnp.array([0, -1, 2])
  u = jnp.array([0.3, 0.5, 0.7])

  def f(h):
    return jnp.sum(u * _lce(h, w, t, reduction="none", chunk_size=2,
                                            label_smoothing=0.1))

  assert np.isnan(jax.grad(f)(h)[1]).all() and np.isfinite(np.delete(jax.grad(f)(h), 1, 0)).all()
  hess = np.asarray(jax.hessian(f)(h))
  assert np.isnan(hess[1, :, 1, :]).all()
  assert np.isfinite(hess[[0, 2]]).all() and not hess[[0, 2], :, 1, :].any()
  good = lambda h: jnp.sum(u[::2] * materialised(h, w, t[::2], eps=0.1, reduction="none"))  # noqa: E731
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
  h, w, b, t = linear_problem(rng, n=16, hdim=8, v=40)
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
