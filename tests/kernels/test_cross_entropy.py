"""The reduced Pallas loss and its derivatives (``_kernels._cross_entropy``), in interpret
mode on the CPU, against the XLA path and the plain formula."""

import itertools
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softmax_jax as sj
from softmax_jax import _numerics
from softmax_jax._kernels import _cross_entropy

# SOFTMAX_JAX_FULL_MATRIX=1 runs every combination of the sampled parametrizations below;
# by default each option, reduction and tile layout is taken at least once.
FULL_MATRIX = os.environ.get("SOFTMAX_JAX_FULL_MATRIX", "") == "1"


def _cases(full, sample):
  return [pytest.param(*c) for c in (full if FULL_MATRIX else sample)]


def _xla(z, t, reduction="mean", **kw):
  return sj.cross_entropy_with_integer_labels(z, t, reduction=reduction, impl="xla", **kw)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_public_function_with_impl_pallas(masked_logits, rng, reduction):
  x = masked_logits((3, 4, 33))
  t = jnp.asarray(rng.integers(0, 33, (3, 4))).at[0, 1].set(32)
  f = lambda z, impl: sj.cross_entropy_with_integer_labels(z, t, reduction=reduction,  # noqa: E731
                                                           impl=impl)
  np.testing.assert_allclose(f(x, "pallas"), f(x, "xla"), rtol=2e-6, atol=2e-6)
  g = jax.grad(lambda z: jnp.sum(f(z, "pallas")))(x)
  h = jax.grad(lambda z: jnp.sum(f(z, "xla")))(x)
  np.testing.assert_allclose(g, h, atol=2e-7)
  np.testing.assert_allclose(jax.jit(jax.grad(lambda z: jnp.sum(f(z, "pallas"))))(x), g,
                             atol=1e-7)


OPTIONS = [
    {"class_weights": True},
    {"label_smoothing": 0.1},
    {"ignore_index": 2},
    {"z_loss": 1e-2},
    {"logit_softcap": 4.0},
    {"class_weights": True, "label_smoothing": 0.2, "ignore_index": 2, "z_loss": 1e-3,
     "logit_softcap": 3.0},
]
TILES = [(33, 16384), (300, 128)]  # (classes, max_tile): one tile, three tiles


def _value_and_grads(f, reduction):
  """``((Σ ℓ, ℓ), (∂Σℓ/∂z, ∂Σℓ/∂w))`` of ``ℓ = f(z, w, reduction)`` in one jitted program
  (jitted: eager dispatch of the transformed functions is what makes these tests slow)."""
  def summed(z, w):
    out = f(z, w, reduction)
    return jnp.sum(out), out

  return jax.jit(jax.value_and_grad(summed, (0, 1), has_aux=True))


def _kernel_kw(kw):
  """The public options as :func:`_cross_entropy.cross_entropy` names them."""
  return dict(eps=kw.get("label_smoothing", 0.0), z_loss=kw.get("z_loss", 0.0),
              softcap=kw.get("logit_softcap"), ignore_index=kw.get("ignore_index"))


@pytest.mark.parametrize("opts,c,max_tile,reduction", _cases(
    [(o, *tl, r) for o, tl, r in itertools.product(OPTIONS, TILES, ["mean", "none"])],
    [(o, *TILES[i % 2], ["mean", "none"][i % 2]) for i, o in enumerate(OPTIONS)]
    + [(OPTIONS[-1], *TILES[0], "mean")]))
def test_every_option_matches_the_xla_path(masked_logits, rng, opts, c, max_tile, reduction):
  x = masked_logits((9, c))  # with an empty row and a half-masked one
  t = jnp.asarray(rng.integers(0, c, 9)).at[1].set(c - 1).at[3].set(2).at[4].set(2)
  w = jnp.asarray(rng.random(c) + 0.5, jnp.float32)
  kw = {k: v for k, v in opts.items() if k != "class_weights"}
  weighted = opts.get("class_weights", False)

  def pallas(z, w, reduction):
    return _cross_entropy.cross_entropy(z, t, reduction, weights=w if weighted else None,
                                        max_tile=max_tile, **_kernel_kw(kw))

  def xla(z, w, reduction):
    return _xla(z, t, reduction, class_weights=w if weighted else None, **kw)

  (_, got), (gz, gw) = _value_and_grads(pallas, reduction)(x, w)
  (_, want), (hz, hw) = _value_and_grads(xla, reduction)(x, w)
  np.testing.assert_allclose(got, want, rtol=3e-6, atol=3e-6)
  np.testing.assert_allclose(gz, hz, atol=3e-7)
  np.testing.assert_allclose(gw, hw, rtol=3e-5, atol=3e-6)


@pytest.mark.parametrize("max_tile", [16384, 16])
def test_all_neg_inf_rows_and_bad_labels(rng, max_tile):
  """A row of −inf logits: loss 0, gradient 0, not counted; a counted label outside
  [0, C) or on a −inf class: NaN loss and NaN gradient row, other rows untouched."""
  c = 40
  x = jnp.asarray(rng.normal(size=(6, c)), jnp.float32).at[0].set(-jnp.inf).at[3, 5].set(
      -jnp.inf)
  t = jnp.asarray([7, 40, -3, 5, 1, 2])  # row 1: C; row 2: negative; row 3: a −inf class
  loss = lambda z, r: _cross_entropy.cross_entropy(z, t, r, max_tile=max_tile)  # noqa: E731
  per = loss(x, "none")
  g = jax.jit(jax.grad(lambda z: loss(z, "sum")))(x)
  assert per[0] == 0 and np.all(g[0] == 0)
  assert np.isnan(per[1:4]).all() and np.isnan(g[1:4]).all()
  np.testing.assert_allclose(per[4:], _xla(x[4:], t[4:], "none"), rtol=2e-6)
  np.testing.assert_allclose(g[4:], jax.jit(jax.grad(lambda z: _xla(z, t[4:], "sum")))(x[4:]),
                             atol=2e-7)
  np.testing.assert_array_equal(np.isnan(per), np.isnan(_xla(x, t, "none")))
  # nothing counts: the mean is 0 with a zero gradient
  empty = jnp.full((3, c), -jnp.inf, jnp.float32)
  t3 = jnp.asarray([1, 2, 3])
  assert _cross_entropy.cross_entropy(empty, t3, "mean") == 0
  assert not np.any(jax.jit(jax.grad(lambda z: _cross_entropy.cross_entropy(z, t3, "mean")))(
      empty))


@pytest.mark.parametrize("dtype,labels,ignore,expect", [
    (np.uint8, [255, 0, 7, 3], None, [True] * 4),  # C = 256: 255 is a class
    (np.uint8, [255, 0, 7, 3], 7, [True, True, False, True]),
    (np.int8, [-1, 0, 100, 3], -1, [False, True, True, True]),
    pytest.param(np.int64, [2**32 + 1, 1, -100, 3], -100, ["nan", True, False, True],
                 marks=pytest.mark.x64),
])
def test_labels_of_any_integer_dtype_through_the_core_codes(rng, dtype, labels, ignore, expect):
  """Labels become the core's codes outside the kernel: uint8 labels with C = 256 are all
  valid, an int64 label of 2**32 + 1 is INVALID (NaN), never class 1."""
  x = jnp.asarray(rng.normal(size=(4, 256)), jnp.float32)
  t = jnp.asarray(np.asarray(labels, dtype))
  assert t.dtype == dtype
  per = _cross_entropy.cross_entropy(x, t, "none", ignore_index=ignore)
  codes = _numerics.canonical_labels(t, 256, ignore)
  for row, e in enumerate(expect):
    if e == "nan":
      assert np.isnan(per[row]) and codes[row] == _numerics.INVALID
    elif e:
      np.testing.assert_allclose(per[row], _xla(x[row:row + 1], codes[row:row + 1], "sum"),
                                 rtol=2e-6)
    else:
      assert per[row] == 0 and codes[row] == _numerics.IGNORED
  mean = _cross_entropy.cross_entropy(x, t, "mean", ignore_index=ignore)
  if "nan" not in expect:
    kept = np.asarray(expect)
    np.testing.assert_allclose(mean, np.mean(np.asarray(per)[kept]), rtol=2e-6)


def test_host_int64_labels_in_the_default_32_bit_mode(rng):
  """With x64 off (the default configuration), NumPy int64 labels of 2**32 + 1 are not
  wrapped to class 1."""
  x = jnp.asarray(rng.normal(size=(2, 8)), jnp.float32)
  per = _cross_entropy.cross_entropy(x, np.asarray([2**32 + 1, 1], np.int64), "none")
  assert np.isnan(per[0]) and np.isfinite(per[1])


def _naive(z, t, w=None, eps=0.0, z_loss=0.0, softcap=None, reduction="mean"):
  """The loss written plainly (rows without −inf): the reference for forward mode."""
  if softcap is not None:
    z = softcap * jnp.tanh(z / softcap)
  logp = jax.nn.log_softmax(z)
  lse = jax.nn.logsumexp(z, -1)
  w = jnp.ones(z.shape[-1], z.dtype) if w is None else w
  w_t = w[t]
  nll = -jnp.take_along_axis(logp, t[:, None], -1)[:, 0]
  loss = ((1 - eps) * w_t * nll + eps / z.shape[-1] * jnp.sum(w * -logp, -1)
          + z_loss * jnp.square(lse))
  if reduction == "none":
    return loss
  return jnp.sum(loss) if reduction == "sum" else jnp.sum(loss) / jnp.sum(w_t)


PLAIN, EVERY = {}, {"weighted": True, "eps": 0.1, "z_loss": 1e-2, "softcap": 4.0}


def _forward_case(rng, opts, reduction, max_tile=16384):
  """Logits without −inf, and the loss three ways: Pallas, the plain formula, XLA."""
  x = jnp.asarray(rng.normal(size=(5, 24)) * 2, jnp.float32)
  t = jnp.asarray(rng.integers(0, 24, 5))
  w = jnp.asarray(rng.random(24) + 0.5, jnp.float32)
  kw = {k: v for k, v in opts.items() if k != "weighted"}
  weighted = opts.get("weighted", False)

  def pallas(z, w):
    return _cross_entropy.cross_entropy(z, t, reduction, weights=w if weighted else None,
                                        max_tile=max_tile, **kw)

  def naive(z, w):
    return _naive(z, t, w if weighted else None, reduction=reduction, **kw)

  def xla(z, w):
    return _xla(z, t, reduction, class_weights=w if weighted else None,
                label_smoothing=kw.get("eps", 0.0), z_loss=kw.get("z_loss", 0.0),
                logit_softcap=kw.get("softcap"))

  return x, w, pallas, naive, xla


@pytest.mark.parametrize("opts,reduction", _cases(
    list(itertools.product([PLAIN, EVERY], ["mean", "sum", "none"])),
    [(EVERY, "mean"), (PLAIN, "sum"), (EVERY, "none")]))
def test_forward_mode_jvp_jacfwd_linearize(rng, opts, reduction):
  """``jax.jvp``, ``jax.linearize`` and ``jax.jacfwd`` of the Pallas loss equal forward
  mode of the plain formula, the XLA path's reverse mode and central differences."""
  x, w, pallas, naive, xla = _forward_case(rng, opts, reduction)
  v = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  vw = jnp.asarray(rng.normal(size=w.shape), jnp.float32)
  jvp = jax.jit(jax.jvp, static_argnums=0)  # (jitted: eager dispatch is what is slow)
  out, tan = jvp(pallas, (x, w), (v, vw))
  want, want_tan = jvp(naive, (x, w), (v, vw))
  np.testing.assert_allclose(out, want, rtol=2e-6)
  np.testing.assert_allclose(out, jax.jit(xla)(x, w), rtol=2e-6)
  np.testing.assert_allclose(tan, want_tan, rtol=2e-5, atol=2e-6)
  np.testing.assert_allclose(tan, jvp(xla, (x, w), (v, vw))[1], rtol=2e-5, atol=2e-6)
  linearized = jax.jit(lambda x, w, v, vw: jax.linearize(pallas, x, w)[1](v, vw))
  np.testing.assert_allclose(linearized(x, w, v, vw), tan, rtol=1e-6, atol=1e-7)
  h = 1e-2  # central differences in float32
  fd = (jax.jit(lambda h: pallas(x + h * v, w + h * vw) - pallas(x - h * v, w - h * vw))(h)
        / (2 * h))
  np.testing.assert_allclose(tan, fd, rtol=2e-3, atol=2e-4)
  chex.assert_trees_all_close(jax.jit(jax.jacfwd(pallas, (0, 1)))(x, w),
                              jax.jit(jax.jacrev(xla, (0, 1)))(x, w), rtol=3e-5, atol=3e-7)


@pytest.mark.parametrize("max_tile", [16384] + ([8] if FULL_MATRIX else []))
def test_hessian_is_the_softmax_jacobian(rng, max_tile):
  """The Hessian of the summed loss is block-diagonal with the rows' softmax Jacobians
  ``diag(y) − y yᵀ`` (lecture, "Derivative of the softmax function")."""
  x = jnp.asarray(rng.normal(size=(3, 20)) * 2, jnp.float32)
  t = jnp.asarray([0, 7, 19])
  hess = jax.jit(jax.hessian(lambda z: _cross_entropy.cross_entropy(z, t, "sum",
                                                                    max_tile=max_tile)))(x)
  jac = sj.softmax_jacobian(x)
  for i in range(3):
    for j in range(3):
      np.testing.assert_allclose(hess[i, :, j, :], jac[i] if i == j else 0, atol=2e-7)


@pytest.mark.parametrize("opts,reduction", _cases(
    list(itertools.product([PLAIN, EVERY], ["mean", "none"])),
    [(EVERY, "mean"), (PLAIN, "none")]))
def test_second_order_with_every_option(rng, opts, reduction):
  """``jax.hessian`` (logits and class weights together) and grad of grad equal those
  of the plain formula (three tiles a row)."""
  x, w, pallas, naive, _ = _forward_case(rng, opts, reduction, max_tile=8)
  u = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  total = (lambda f: lambda z, w: jnp.sum(f(z, w) * jnp.arange(1.0, 6.0))) if (
      reduction == "none") else (lambda f: f)
  chex.assert_trees_all_close(jax.jit(jax.hessian(total(pallas), (0, 1)))(x, w),
                              jax.jit(jax.hessian(total(naive), (0, 1)))(x, w), rtol=1e-4,
                              atol=2e-6)

  def grad_of_grad(f):
    return jax.jit(jax.grad(lambda z: jnp.vdot(jax.grad(total(f))(z, w), u)))(x)

  np.testing.assert_allclose(grad_of_grad(pallas), grad_of_grad(naive), rtol=1e-4, atol=2e-6)


@pytest.mark.parametrize("opts", [{"class_weights": True, "label_smoothing": 0.1}]
                         + ([{}] if FULL_MATRIX else []))
def test_donating_the_logits_changes_no_result(masked_logits, rng, opts):
  x = masked_logits((6, 40))
  x_before = np.asarray(x).copy()
  t = jnp.asarray(rng.integers(0, 40, 6)).at[1].set(39)
  w = jnp.asarray(rng.random(40) + 0.5, jnp.float32)

  def loss(z, w, donate):
    return sj.cross_entropy_with_integer_labels(
        z, t, class_weights=w if opts else None, label_smoothing=opts.get("label_smoothing", 0.0),
        impl="pallas", donate_logits=donate)

  f = jax.jit(jax.value_and_grad(loss, (0, 1)), static_argnums=2)
  chex.assert_trees_all_equal(f(x, w, True), f(x, w, False))
  # the logits are unchanged afterwards: XLA copied them rather than overwrite them
  np.testing.assert_array_equal(np.asarray(x), x_before)
  # and forward mode with donation
  v = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  jvp = jax.jit(lambda z, v, d: jax.jvp(lambda z: loss(z, w, d), (z,), (v,))[1],
                static_argnums=2)
  np.testing.assert_array_equal(jvp(x, v, True), jvp(x, v, False))


def test_donate_logits_must_be_a_bool(rng):
  x = jnp.asarray(rng.normal(size=(4, 8)), jnp.float32)
  with pytest.raises(TypeError, match="donate_logits must be True or False"):
    sj.cross_entropy_with_integer_labels(x, jnp.zeros(4, jnp.int32), donate_logits="yes")


@pytest.mark.parametrize("dtype,weighted", _cases(
    list(itertools.product([jnp.float32, jnp.bfloat16, jnp.float16], [False, True])),
    [(jnp.float32, True), (jnp.bfloat16, False), (jnp.float16, True)]))
def test_kernel_gradient_prescaled_by_the_expected_cotangent(rng, dtype, weighted):
  """The kernel writes the gradient divided by the mean's predicted denominator; other
  cotangents (a scaled loss, a row the prediction missed, reduction="none") are
  rescaled.  Every case equals the XLA path."""
  x = jnp.asarray(rng.normal(size=(7, 40)) * 3, dtype)
  t = jnp.asarray(rng.integers(0, 40, 7)).at[2].set(-100)
  w = jnp.asarray(rng.random(40) + 0.5, jnp.float32) if weighted else None
  x_empty = x.at[4].set(-jnp.inf)  # not counted: the predicted denominator is off
  v = jnp.asarray(rng.normal(size=7), jnp.float32)

  def loss(z, impl, reduction="mean"):
    return sj.cross_entropy_with_integer_labels(z, t, class_weights=w, ignore_index=-100,
                                                reduction=reduction, impl=impl)

  cases = {
      "mean": lambda z, impl: loss(z, impl),
      "sum": lambda z, impl: loss(z, impl, "sum"),
      "half mean": lambda z, impl: 0.5 * loss(z, impl),
      "none": lambda z, impl: jnp.sum(v * loss(z, impl, "none")),
  }
  tol = 1e-6 if dtype == jnp.float32 else 1e-2
  for name, f in cases.items():
    grad = jax.jit(jax.grad(f), static_argnums=1)
    for z in (x, x_empty):
      gp = grad(z, "pallas").astype(jnp.float32)
      gx = grad(z, "xla").astype(jnp.float32)
      np.testing.assert_allclose(gp, gx, rtol=tol, atol=tol * float(jnp.max(jnp.abs(gx))),
                                 err_msg=name)
