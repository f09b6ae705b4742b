"""The fused Pallas kernels, run in interpret mode on the CPU, against the XLA path."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

import softmax_jax as sj
from softmax_jax import _numerics
from softmax_jax._kernels import _pallas

pytestmark = pytest.mark.x64

TRITON = "__gpu$xla.gpu.triton"
NO_TRITON_CHECK = export.DisabledSafetyCheck.custom_call(TRITON)


def _logits(rng, shape, dtype=jnp.float32):
  x = jnp.asarray(rng.normal(size=shape) * 3, dtype)
  x = x.reshape(-1, shape[-1]).at[0].set(-jnp.inf)  # an empty row
  x = x.at[1, : shape[-1] // 2].set(-jnp.inf)  # a half-masked row
  return x.reshape(shape)


def _xla(z, t, reduction="mean", **kw):
  return sj.cross_entropy_with_integer_labels(z, t, reduction=reduction, impl="xla", **kw)


@pytest.mark.parametrize("c,max_tile", [(10, 16384), (1000, 16384), (4096, 512), (3072, 1024)])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_kernel_one_and_many_tiles(rng, c, max_tile, log):
  x = _logits(rng, (13, c))
  got = _pallas.softmax_2d(x, log=log, max_tile=max_tile)
  want = (sj.log_softmax if log else sj.softmax)(x, impl="xla")
  np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
  np.testing.assert_allclose(jnp.where(jnp.isfinite(want), got, 0),
                             jnp.where(jnp.isfinite(want), want, 0), rtol=2e-6, atol=2e-7)


@pytest.mark.parametrize("c,max_tile", [(10, 16384), (4096, 512)])
def test_cross_entropy_kernel_loss_and_gradient(rng, c, max_tile):
  x = _logits(rng, (11, c))
  t = jnp.asarray(rng.integers(0, c, 11)).at[1].set(c - 1)  # a label on a finite logit
  loss, grad, aux = _pallas.xent_2d(x, t, max_tile=max_tile)
  np.testing.assert_allclose(loss, _xla(x, t, "none"), rtol=2e-6, atol=2e-6)
  want_grad = jax.grad(lambda z: _xla(z, t, "sum"))(x)
  np.testing.assert_allclose(grad, want_grad, atol=2e-7)
  np.testing.assert_array_equal(aux[:, 1], [0.0] + [1.0] * 10)  # counted
  formula = _pallas.xent_formula(x, t, None)  # the XLA-op twin of the kernel
  np.testing.assert_allclose(formula[0], loss, rtol=2e-6, atol=2e-6)
  np.testing.assert_allclose(formula[1], grad, atol=2e-7)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 2e-6), (jnp.bfloat16, 1e-2)])
@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_public_functions_with_impl_pallas(rng, dtype, tol, fn):
  x = jnp.asarray(rng.normal(size=(2, 5, 40)), dtype)
  f = getattr(sj, fn)
  got = f(x, impl="pallas")
  assert got.dtype == dtype and got.shape == x.shape
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(f(x), np.float32),
                             rtol=tol, atol=tol)
  v = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  g = jax.grad(lambda z: jnp.sum(f(z, impl="pallas").astype(jnp.float32) * v))(x)
  h = jax.grad(lambda z: jnp.sum(f(z, impl="xla").astype(jnp.float32) * v))(x)
  np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(h, np.float32),
                             rtol=10 * tol, atol=10 * tol)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_with_impl_pallas(rng, reduction):
  x = _logits(rng, (3, 4, 33))
  t = jnp.asarray(rng.integers(0, 33, (3, 4))).at[0, 1].set(32)
  f = lambda z, impl: sj.cross_entropy_with_integer_labels(z, t, reduction=reduction,  # noqa: E731
                                                           impl=impl)
  np.testing.assert_allclose(f(x, "pallas"), f(x, "xla"), rtol=2e-6, atol=2e-6)
  g = jax.grad(lambda z: jnp.sum(f(z, "pallas")))(x)
  h = jax.grad(lambda z: jnp.sum(f(z, "xla")))(x)
  np.testing.assert_allclose(g, h, atol=2e-7)
  assert jax.jit(jax.grad(lambda z: jnp.sum(f(z, "pallas"))))(x).shape == x.shape


OPTIONS = [
    {"class_weights": True},
    {"label_smoothing": 0.1},
    {"ignore_index": 2},
    {"z_loss": 1e-2},
    {"logit_softcap": 4.0},
    {"class_weights": True, "label_smoothing": 0.2, "ignore_index": 2, "z_loss": 1e-3,
     "logit_softcap": 3.0},
]


def _kernel_kw(kw):
  """The public options as :func:`_pallas.cross_entropy` names them."""
  return dict(eps=kw.get("label_smoothing", 0.0), z_loss=kw.get("z_loss", 0.0),
              softcap=kw.get("logit_softcap"), ignore_index=kw.get("ignore_index"))


@pytest.mark.parametrize("opts", OPTIONS)
@pytest.mark.parametrize("c,max_tile", [(33, 16384), (300, 128)])
def test_every_option_matches_the_xla_path(rng, opts, c, max_tile):
  x = _logits(rng, (9, c))  # with an empty row and a half-masked one
  t = jnp.asarray(rng.integers(0, c, 9)).at[1].set(c - 1).at[3].set(2).at[4].set(2)
  w = jnp.asarray(rng.random(c) + 0.5, jnp.float32)
  kw = {k: v for k, v in opts.items() if k != "class_weights"}
  weighted = opts.get("class_weights", False)

  def pallas(z, w, reduction):
    return _pallas.cross_entropy(z, t, reduction, weights=w if weighted else None,
                                 max_tile=max_tile, **_kernel_kw(kw))

  def xla(z, w, reduction, labels=t):
    return _xla(z, labels, reduction, class_weights=w if weighted else None, **kw)

  for reduction in ("mean", "none"):
    np.testing.assert_allclose(pallas(x, w, reduction), xla(x, w, reduction), rtol=3e-6,
                               atol=3e-6)
    gp = jax.grad(lambda z, w, r=reduction: jnp.sum(pallas(z, w, r)), (0, 1))(x, w)
    gx = jax.grad(lambda z, r=reduction: jnp.sum(xla(z, w, r)))(x)
    np.testing.assert_allclose(gp[0], gx, atol=3e-7, err_msg=reduction)
    # the weights' gradient without the empty row, which counts for nothing (the XLA path
    # of this commit gives its label's weight a NaN gradient there)
    gw = jax.grad(lambda w, r=reduction: jnp.sum(xla(x[1:], w, r, t[1:])))(w)
    np.testing.assert_allclose(gp[1], gw, rtol=3e-5, atol=3e-6, err_msg=reduction)


@pytest.mark.parametrize("max_tile", [16384, 16])
def test_all_neg_inf_rows_and_bad_labels(rng, max_tile):
  """A row of −inf logits: loss 0, gradient 0, not counted; a counted label outside
  [0, C) or on a −inf class: NaN loss and NaN gradient row, other rows untouched."""
  c = 40
  x = jnp.asarray(rng.normal(size=(6, c)), jnp.float32).at[0].set(-jnp.inf).at[3, 5].set(
      -jnp.inf)
  t = jnp.asarray([7, 40, -3, 5, 1, 2])  # row 1: C; row 2: negative; row 3: a −inf class
  per = _pallas.cross_entropy(x, t, "none", max_tile=max_tile)
  g = jax.grad(lambda z: jnp.sum(_pallas.cross_entropy(z, t, "sum", max_tile=max_tile)))(x)
  assert per[0] == 0 and np.all(g[0] == 0)
  assert np.isnan(per[1:4]).all() and np.isnan(g[1:4]).all()
  np.testing.assert_allclose(per[4:], _xla(x[4:], t[4:], "none"), rtol=2e-6)
  np.testing.assert_allclose(g[4:], jax.grad(lambda z: _xla(z, t[4:], "sum"))(x[4:]),
                             atol=2e-7)
  np.testing.assert_array_equal(np.isnan(per), np.isnan(_xla(x, t, "none")))
  # nothing counts: the mean is 0 with a zero gradient
  empty = jnp.full((3, c), -jnp.inf, jnp.float32)
  t3 = jnp.asarray([1, 2, 3])
  assert _pallas.cross_entropy(empty, t3, "mean") == 0
  assert not np.any(jax.grad(lambda z: _pallas.cross_entropy(z, t3, "mean"))(empty))


@pytest.mark.parametrize("dtype,labels,ignore,expect", [
    (np.uint8, [255, 0, 7, 3], None, [True] * 4),  # C = 256: 255 is a class
    (np.uint8, [255, 0, 7, 3], 7, [True, True, False, True]),
    (np.int8, [-1, 0, 100, 3], -1, [False, True, True, True]),
    (np.int64, [2**32 + 1, 1, -100, 3], -100, ["nan", True, False, True]),
])
def test_labels_of_any_integer_dtype_through_the_core_codes(rng, dtype, labels, ignore, expect):
  """Labels become the core's codes outside the kernel: uint8 labels with C = 256 are all
  valid, an int64 label of 2**32 + 1 is INVALID (NaN), never class 1."""
  x = jnp.asarray(rng.normal(size=(4, 256)), jnp.float32)
  t = jnp.asarray(np.asarray(labels, dtype))
  per = _pallas.cross_entropy(x, t, "none", ignore_index=ignore)
  codes = _numerics.canonical_labels(t, 256, ignore)
  for row, e in enumerate(expect):
    if e == "nan":
      assert np.isnan(per[row]) and codes[row] == _numerics.INVALID
    elif e:
      np.testing.assert_allclose(per[row], _xla(x[row:row + 1], codes[row:row + 1], "sum"),
                                 rtol=2e-6)
    else:
      assert per[row] == 0 and codes[row] == _numerics.IGNORED
  mean = _pallas.cross_entropy(x, t, "mean", ignore_index=ignore)
  if "nan" not in expect:
    kept = np.asarray(expect)
    np.testing.assert_allclose(mean, np.mean(np.asarray(per)[kept]), rtol=2e-6)


def test_host_int64_labels_in_the_default_32_bit_mode(rng):
  """With x64 off (the default configuration), NumPy int64 labels of 2**32 + 1 are not
  wrapped to class 1."""
  with jax.enable_x64(False):
    x = jnp.asarray(rng.normal(size=(2, 8)), jnp.float32)
    per = _pallas.cross_entropy(x, np.asarray([2**32 + 1, 1], np.int64), "none")
    assert np.isnan(per[0]) and np.isfinite(per[1])


@pytest.mark.parametrize("max_tile", [16384, 16])
def test_exact_tail_in_the_label_entry(max_tile):
  """float32 logits [20, 0, −1] with label 0: the label entry of the gradient is
  −(1 − y_0) = −2.8194e-9 from the tail, not 0 (single tile, and merged over tiles with
  the dominant class in a later tile)."""
  x = jnp.full((2, 40), -jnp.inf, jnp.float32)
  x = x.at[0, :3].set(jnp.asarray([20.0, 0.0, -1.0], jnp.float32)).at[1, 30:33].set(
      jnp.asarray([-1.0, 0.0, 20.0], jnp.float32))
  t = jnp.asarray([0, 32])
  g = jax.grad(lambda z: _pallas.cross_entropy(z, t, "sum", max_tile=max_tile))(x)
  tail = np.exp(-20.0) + np.exp(-21.0)
  np.testing.assert_allclose(g[0, 0], -tail, rtol=1e-6)
  np.testing.assert_allclose(g[1, 32], -tail, rtol=1e-6)
  np.testing.assert_allclose(jnp.sum(g, -1), 0, atol=1e-15)  # to an ulp of the label entry
  loss = _pallas.cross_entropy(x, t, "none", max_tile=max_tile)
  np.testing.assert_allclose(loss, np.log1p(tail), rtol=1e-6)  # −log y_t, not 0


def test_float16_gradient_under_loss_scaling(rng):
  """float16 logits at N = 16384, C = 128, loss × 4096: the kernel does not fold 1/N into
  the stored float16 gradient (it would underflow), so the gradient matches a float64
  reference as closely as the XLA path does and has no spurious exact zeros."""
  n, c = 16384, 128
  x = jnp.asarray(rng.normal(size=(n, c)) * 3, jnp.float16)
  t = jnp.asarray(rng.integers(0, c, n))
  z = np.asarray(x, np.float64)
  y = np.exp(z - z.max(1, keepdims=True))
  y /= y.sum(1, keepdims=True)
  y[np.arange(n), np.asarray(t)] -= 1
  ref = 4096 * y / n
  representable = np.abs(ref) >= 2**-24  # nonzero in float16
  errors = {}
  for impl in ("pallas", "xla"):
    g = jax.jit(jax.grad(lambda z, impl=impl: 4096 * sj.cross_entropy_with_integer_labels(
        z, t, impl=impl)))(x)
    assert g.dtype == jnp.float16
    g = np.asarray(g, np.float64)
    assert not np.any((g == 0) & representable), impl
    errors[impl] = np.median(np.abs(g - ref)[ref != 0] / np.abs(ref[ref != 0]))
  assert errors["pallas"] <= 1.05 * errors["xla"] and errors["pallas"] < 5e-4, errors


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


FORWARD_OPTIONS = [{}, {"weighted": True, "eps": 0.1, "z_loss": 1e-2, "softcap": 4.0}]


def _forward_case(rng, opts, reduction, max_tile=16384):
  """Logits without −inf, and the loss three ways: Pallas, the plain formula, XLA."""
  x = jnp.asarray(rng.normal(size=(5, 24)) * 2, jnp.float32)
  t = jnp.asarray(rng.integers(0, 24, 5))
  w = jnp.asarray(rng.random(24) + 0.5, jnp.float32)
  kw = {k: v for k, v in opts.items() if k != "weighted"}
  weighted = opts.get("weighted", False)

  def pallas(z, w):
    return _pallas.cross_entropy(z, t, reduction, weights=w if weighted else None,
                                 max_tile=max_tile, **kw)

  def naive(z, w):
    return _naive(z, t, w if weighted else None, reduction=reduction, **kw)

  def xla(z, w):
    return _xla(z, t, reduction, class_weights=w if weighted else None,
                label_smoothing=kw.get("eps", 0.0), z_loss=kw.get("z_loss", 0.0),
                logit_softcap=kw.get("softcap"))

  return x, w, pallas, naive, xla


@pytest.mark.parametrize("opts", FORWARD_OPTIONS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_forward_mode_jvp_jacfwd_linearize(rng, opts, reduction):
  """``jax.jvp``, ``jax.linearize`` and ``jax.jacfwd`` of the Pallas loss equal forward
  mode of the plain formula, the XLA path's reverse mode and central differences."""
  x, w, pallas, naive, xla = _forward_case(rng, opts, reduction)
  v = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  vw = jnp.asarray(rng.normal(size=w.shape), jnp.float32)
  out, tan = jax.jvp(pallas, (x, w), (v, vw))
  want, want_tan = jax.jvp(naive, (x, w), (v, vw))
  np.testing.assert_allclose(out, want, rtol=2e-6)
  np.testing.assert_allclose(out, xla(x, w), rtol=2e-6)
  np.testing.assert_allclose(tan, want_tan, rtol=2e-5, atol=2e-6)
  np.testing.assert_allclose(tan, jax.jvp(xla, (x, w), (v, vw))[1], rtol=2e-5, atol=2e-6)
  _, lin = jax.linearize(pallas, x, w)
  np.testing.assert_allclose(lin(v, vw), tan, rtol=1e-6, atol=1e-7)
  h = 1e-2  # central differences in float32
  fd = (pallas(x + h * v, w + h * vw) - pallas(x - h * v, w - h * vw)) / (2 * h)
  np.testing.assert_allclose(tan, fd, rtol=2e-3, atol=2e-4)
  for i in (0, 1):  # jacfwd against the XLA path's reverse mode
    np.testing.assert_allclose(jax.jacfwd(pallas, i)(x, w), jax.jacrev(xla, i)(x, w),
                               rtol=3e-5, atol=3e-7)


@pytest.mark.parametrize("max_tile", [16384, 8])
def test_hessian_is_the_softmax_jacobian(rng, max_tile):
  """The Hessian of the summed loss is block-diagonal with the rows' softmax Jacobians
  ``diag(y) − y yᵀ`` (x64 off: the default configuration)."""
  with jax.enable_x64(False):
    x = jnp.asarray(rng.normal(size=(3, 20)) * 2, jnp.float32)
    t = jnp.asarray([0, 7, 19])
    hess = jax.hessian(lambda z: _pallas.cross_entropy(z, t, "sum", max_tile=max_tile))(x)
    jac = sj.softmax_jacobian(x)
    for i in range(3):
      for j in range(3):
        np.testing.assert_allclose(hess[i, :, j, :], jac[i] if i == j else 0, atol=2e-7)


@pytest.mark.parametrize("opts", FORWARD_OPTIONS)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_second_order_with_every_option(rng, opts, reduction):
  """``jax.hessian`` (logits and class weights together) and grad of grad equal those
  of the plain formula."""
  x, w, pallas, naive, _ = _forward_case(rng, opts, reduction, max_tile=8)
  u = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  total = (lambda f: lambda z, w: jnp.sum(f(z, w) * jnp.arange(1.0, 6.0))) if (
      reduction == "none") else (lambda f: f)
  for a, b in zip(jax.tree.leaves(jax.hessian(total(pallas), (0, 1))(x, w)),
                  jax.tree.leaves(jax.hessian(total(naive), (0, 1))(x, w)), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6)

  def grad_of_grad(f):
    return jax.grad(lambda z: jnp.vdot(jax.grad(total(f))(z, w), u))(x)

  np.testing.assert_allclose(grad_of_grad(pallas), grad_of_grad(naive), rtol=1e-4, atol=2e-6)


def _mults_after_the_kernel(hlo: str, shape: str) -> list[str]:
  """``multiply`` instructions producing ``shape`` in the entry computation (directly or
  inside a fusion) that do not come from the kernel (interpret mode tags those
  ``xent_2d``)."""
  blocks = re.split(r"\n(?=\S)", hlo)
  comps = {m.group(1): b for b in blocks if (m := re.match(r"(?:ENTRY )?%(\S+)", b))}
  entry = next(b for b in blocks if b.startswith("ENTRY"))
  found = []
  for line in entry.splitlines():
    if f"= {shape}" not in line:
      continue
    bodies = [line]
    if called := re.search(r"calls=%([\w.\-]+)", line):
      bodies.append(comps[called.group(1)])
    found += [ins.strip() for body in bodies for ins in body.splitlines()
              if " multiply(" in ins and "xent_2d" not in ins]
  return found


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_grad_of_the_loss_is_the_kernel_output_in_the_optimised_program(rng, dtype):
  """Internals (reads the compiled HLO): in the jitted ``jax.grad`` of the mean and the
  sum, nothing multiplies an ``[N, C]`` array after the kernel; a scaled loss does (the
  control that the check sees such a pass)."""
  x = jnp.asarray(rng.normal(size=(24, 40)), {"f32": jnp.float32, "bf16": jnp.bfloat16}[dtype])
  t = jnp.asarray(rng.integers(0, 40, 24))
  w = jnp.asarray(rng.random(40) + 0.5, jnp.float32)

  def hlo(f):
    return jax.jit(jax.grad(f)).lower(x).compile().as_text()

  for weights in (None, w):
    for reduction in ("mean", "sum"):
      text = hlo(lambda z, r=reduction, w=weights: _pallas.cross_entropy(z, t, r, weights=w))
      assert _mults_after_the_kernel(text, f"{dtype}[24,40]") == [], reduction
  text = hlo(lambda z: 0.5 * _pallas.cross_entropy(z, t, "mean"))
  assert _mults_after_the_kernel(text, f"{dtype}[24,40]") != []


def _auto(x, t):
  return _pallas.choose("auto", x, (x.ndim - 1,), "test",
                        kernel=lambda: _pallas.cross_entropy(x, t, "mean"),
                        xla=lambda: _xla(x, t))


def test_auto_dispatch_follows_the_platform_of_the_export():
  """``jax.export`` of ``value_and_grad`` traced on this CPU host: the CUDA program holds
  the Triton kernel and none of the XLA path (no exponential outside the kernel, no
  interpret-mode loop); the CPU program holds no kernel."""
  x = jax.ShapeDtypeStruct((64, 1000), jnp.float32)
  t = jax.ShapeDtypeStruct((64,), jnp.int32)
  for fn, args in ((jax.value_and_grad(_auto), (x, t)),
                   (lambda x: _pallas.choose("auto", x, (1,), "test",
                                             kernel=lambda: _pallas.softmax(x, False),
                                             xla=lambda: sj.softmax(x, impl="xla")), (x,))):
    cuda = export.export(jax.jit(fn), platforms=["cuda"],
                         disabled_checks=[NO_TRITON_CHECK])(*args).mlir_module()
    cpu = export.export(jax.jit(fn), platforms=["cpu"])(*args).mlir_module()
    assert TRITON in cuda
    assert "stablehlo.exponential" not in cuda and "stablehlo.while" not in cuda
    assert TRITON not in cpu and "stablehlo.exponential" in cpu


def test_impl_pallas_lowers_triton_for_cuda_and_interprets_elsewhere():
  x = jax.ShapeDtypeStruct((64, 1000), jnp.float32)
  t = jax.ShapeDtypeStruct((64,), jnp.int32)
  fn = jax.jit(jax.value_and_grad(lambda x, t: _pallas.cross_entropy(x, t, "mean")))
  cuda = export.export(fn, platforms=["cuda"], disabled_checks=[NO_TRITON_CHECK])(x, t)
  assert TRITON in cuda.mlir_module()
  assert TRITON not in export.export(fn, platforms=["cpu"])(x, t).mlir_module()


def test_without_triton_auto_uses_xla_and_pallas_names_the_reason(rng, monkeypatch):
  """Internals (a patched ``_triton_problem`` stands for a missing Triton backend)."""
  x = jnp.asarray(rng.normal(size=(4, 8)), jnp.float32)
  t = jnp.zeros(4, jnp.int32)
  monkeypatch.setattr(_pallas, "_triton_problem", lambda: "no Triton backend (test)")
  assert "pallas_call" not in str(jax.make_jaxpr(_auto)(x, t))
  np.testing.assert_allclose(_auto(x, t), _xla(x, t))
  with pytest.raises(ValueError, match=r"impl='pallas' does not support no Triton backend"):
    _pallas.choose("pallas", x, (1,), "test", kernel=lambda: _pallas.cross_entropy(x, t, "mean"),
                   xla=lambda: _xla(x, t))


def test_a_block_triton_refuses_falls_back_to_xla():
  """A row block over Triton's 2**20 elements is refused while tracing: ``"auto"`` uses
  XLA, ``"pallas"`` raises naming the reason."""
  x = jax.ShapeDtypeStruct((2048, 1024), jnp.float32)
  t = jax.ShapeDtypeStruct((2048,), jnp.int32)

  def loss(impl):
    return lambda x, t: _pallas.choose(
        impl, x, (1,), "test", xla=lambda: _xla(x, t),
        kernel=lambda: _pallas.cross_entropy(x, t, "mean", row_elems=2**22))

  assert "pallas_call" not in str(jax.make_jaxpr(loss("auto"))(x, t))
  with pytest.raises(ValueError, match="exceeds the Triton backend's 1048576"):
    jax.make_jaxpr(loss("pallas"))(x, t)


def test_tile_sizes_are_arguments_of_the_program(rng, monkeypatch):
  """``max_tile`` and ``row_elems`` change the compiled program (same values); the module
  constants are only defaults, not read while tracing (internals: a patched constant
  changes nothing)."""
  x = _logits(rng, (8, 300))
  t = jnp.asarray(rng.integers(0, 300, 8)).at[1].set(299)

  def lowered(**kw):
    f = jax.jit(lambda z: _pallas.cross_entropy(z, t, "mean", **kw))
    return f.lower(x).as_text(), f(x)

  default, v0 = lowered()
  small, v1 = lowered(max_tile=128)
  blocks, v2 = lowered(max_tile=128, row_elems=256)
  assert len({default, small, blocks}) == 3
  np.testing.assert_allclose(v1, v0, rtol=1e-6)
  np.testing.assert_allclose(v2, v0, rtol=1e-6)
  soft = [jax.jit(lambda z, k=k: _pallas.softmax(z, False, max_tile=k)).lower(x).as_text()
          for k in (128, 16384)]
  assert soft[0] != soft[1]
  monkeypatch.setattr(_pallas, "MAX_TILE", 128)
  monkeypatch.setattr(_pallas, "ROW_ELEMS", 256)
  assert lowered()[0] == default
  with pytest.raises(ValueError, match="max_tile must be a power of two"):
    _pallas.cross_entropy(x, t, "mean", max_tile=100)


def test_auto_uses_xla_on_cpu_and_pallas_when_asked(rng):
  """The CPU program of ``impl="auto"`` holds no kernel (its jaxpr holds both branches of
  the platform-dependent choice); ``impl="pallas"`` runs the kernel in interpret mode."""
  x = jnp.asarray(rng.normal(size=(4, 8)), jnp.float32)
  assert "softmax_2d" not in jax.jit(sj.softmax).lower(x).as_text()
  assert "softmax_2d" in jax.jit(lambda z: sj.softmax(z, impl="pallas")).lower(x).as_text()
  assert "pallas_call" not in str(jax.make_jaxpr(lambda z: sj.softmax(z, impl="xla"))(x))


def test_impl_errors(rng):
  x = jnp.asarray(rng.normal(size=(4, 8)), jnp.float32)
  with pytest.raises(ValueError, match="impl must be one of"):
    sj.softmax(x, impl="triton")
  with pytest.raises(ValueError, match="impl must be one of"):
    _pallas.choose("triton", x, (1,), "f", kernel=lambda: x, xla=lambda: x)
  with pytest.raises(ValueError, match="impl='pallas' does not support where"):
    sj.softmax(x, where=x > 0, impl="pallas")
  with pytest.raises(ValueError, match="does not support temperature"):
    sj.log_softmax(x, temperature=2.0, impl="pallas")
  with pytest.raises(ValueError, match=r"axis=\(0,\)"):
    sj.softmax(x, axis=0, impl="pallas")
  with pytest.raises(ValueError, match="dtype float64"):
    sj.softmax(x.astype(jnp.float64), impl="pallas")
  with pytest.raises(ValueError, match="does not support where"):
    sj.cross_entropy_with_integer_labels(x, jnp.zeros(4, jnp.int32), where=x > 0,
                                         impl="pallas")


@pytest.mark.parametrize("shape", [(4096, 1000), (13, 1024), (64, 40000)])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_kernels_lower_for_the_gpu_triton_backend(shape, dtype):
  """Lowering for CUDA needs no GPU: it checks the Triton backend's rules (power-of-two
  array shapes, block layout) for odd row and class counts and the multi-tile path, with
  the core's merge, log1p and complement inside the kernel (and float16's row scale)."""
  x = jax.ShapeDtypeStruct(shape, dtype)
  t = jax.ShapeDtypeStruct(shape[:1], jnp.int32)
  w = jax.ShapeDtypeStruct(shape[1:], jnp.float32)
  for fn, args in ((lambda x: _pallas.softmax_2d(x, log=True, interpret=False), (x,)),
                   (lambda x, t: _pallas.xent_2d(x, t, interpret=False), (x, t)),
                   (lambda x, t, w: _pallas.xent_2d(x, t, w, eps=0.1, z_loss=1e-4, softcap=30.0,
                                                    interpret=False), (x, t, w))):
    module = export.export(jax.jit(fn), platforms=["cuda"], disabled_checks=[NO_TRITON_CHECK])(
        *args)
    assert TRITON in module.mlir_module()


@pytest.mark.parametrize("opts", [{}, {"class_weights": True, "label_smoothing": 0.1}])
def test_donating_the_logits_changes_no_result(rng, opts):
  x = _logits(rng, (6, 40))
  t = jnp.asarray(rng.integers(0, 40, 6)).at[1].set(39)
  w = jnp.asarray(rng.random(40) + 0.5, jnp.float32)

  def loss(z, w, donate):
    return sj.cross_entropy_with_integer_labels(
        z, t, class_weights=w if opts else None, label_smoothing=opts.get("label_smoothing", 0.0),
        impl="pallas", donate_logits=donate)

  for f in (jax.value_and_grad(loss, (0, 1)),
            jax.jit(jax.value_and_grad(loss, (0, 1)), static_argnums=2)):
    got, want = f(x, w, True), f(x, w, False)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
      np.testing.assert_array_equal(a, b)
  # the logits are still readable afterwards: XLA copied them rather than overwrite them
  assert np.isfinite(np.asarray(x)[2:]).all()
  # and forward mode with donation
  v = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  np.testing.assert_array_equal(jax.jvp(lambda z: loss(z, w, True), (x,), (v,))[1],
                                jax.jvp(lambda z: loss(z, w, False), (x,), (v,))[1])


def test_donation_aliases_the_gradient_to_the_logits_in_the_gpu_program():
  """In the CUDA lowering, the Triton call's gradient output aliases its logits operand,
  also through ``jax.grad`` of the loss with the platform-dependent kernel."""
  x = jax.ShapeDtypeStruct((64, 1000), jnp.float32)
  t = jax.ShapeDtypeStruct((64,), jnp.int32)
  pattern = r"output_operand_alias<output_tuple_indices = \[(\d+)\], operand_index = (\d+)"
  aliases = {}
  for donate in (False, True):
    fn = jax.jit(lambda x, t, d=donate: _pallas.xent_2d(x, t, donate=d, interpret=False))
    text = export.export(fn, platforms=["cuda"], disabled_checks=[NO_TRITON_CHECK])(
        x, t).mlir_module()
    aliases[donate] = re.findall(pattern, text)
  assert aliases[False] == []
  assert aliases[True] == [("1", "0")]  # output 1 (the gradient) takes operand 0 (the logits)
  fn = jax.jit(jax.grad(lambda x, t: _pallas.cross_entropy(x, t, "mean", donate=True)))
  text = export.export(fn, platforms=["cuda"], disabled_checks=[NO_TRITON_CHECK])(
      x, t).mlir_module()
  assert re.findall(pattern, text) == [("1", "0")]


def test_donate_logits_must_be_a_bool(rng):
  x = jnp.asarray(rng.normal(size=(4, 8)), jnp.float32)
  with pytest.raises(TypeError, match="donate_logits must be True or False"):
    sj.cross_entropy_with_integer_labels(x, jnp.zeros(4, jnp.int32), donate_logits="yes")


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("weighted", [False, True])
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
    for z in (x, x_empty):
      gp = jax.grad(f)(z, "pallas").astype(jnp.float32)
      gx = jax.grad(f)(z, "xla").astype(jnp.float32)
      np.testing.assert_allclose(gp, gx, rtol=tol, atol=tol * float(jnp.max(jnp.abs(gx))),
                                 err_msg=name)


def test_grad_of_the_mean_uses_the_kernel_gradient_as_is(rng, monkeypatch):
  """Internals (reads the jaxpr, patches ``lax.cond``): in ``jax.grad`` of the mean, the
  gradient is the kernel's output, selected by a cond whose taken branch is empty."""
  from jax.extend.core import jaxprs_in_params
  x = jnp.asarray(rng.normal(size=(8, 64)), jnp.float32)
  t = jnp.asarray(rng.integers(0, 64, 8))
  jaxpr = jax.make_jaxpr(jax.grad(
      lambda z: sj.cross_entropy_with_integer_labels(z, t, impl="pallas")))(x)

  def conds(jp):
    for eqn in jp.eqns:
      if eqn.primitive.name == "cond" and "branches_platforms" not in eqn.params:
        yield eqn
      for sub in jaxprs_in_params(eqn.params):
        yield from conds(sub)

  found = [e for e in conds(jaxpr.jaxpr) if any(v.aval.shape == (8, 64) for v in e.outvars)]
  assert len(found) == 1
  false_branch, true_branch = found[0].params["branches"]
  assert true_branch.jaxpr.eqns == []  # the taken branch forwards the kernel's gradient
  assert any(e.primitive.name == "mul" for e in false_branch.jaxpr.eqns)
  taken = []
  cond = jax.lax.cond

  def spy(pred, *args, **kwargs):
    if not isinstance(pred, jax.core.Tracer):  # eager: the backward pass runs op by op
      taken.append(bool(pred))
    return cond(pred, *args, **kwargs)

  monkeypatch.setattr(_pallas.lax, "cond", spy)
  for w in (None, jnp.asarray(rng.random(64) + 0.5, jnp.float32)):
    g = jax.grad(lambda z, w=w: sj.cross_entropy_with_integer_labels(
        z, t, class_weights=w, impl="pallas"))(x)
    want = jax.grad(lambda z, w=w: sj.cross_entropy_with_integer_labels(
        z, t, class_weights=w, impl="xla"))(x)
    np.testing.assert_allclose(g, want, atol=1e-6)
  assert taken == [True] * 2
