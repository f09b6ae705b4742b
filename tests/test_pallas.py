"""The fused Pallas kernels, run in interpret mode on the CPU, against the XLA path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softmax_jax as sj
from softmax_jax import _pallas


def _logits(rng, shape, dtype=jnp.float32):
  x = jnp.asarray(rng.normal(size=shape) * 3, dtype)
  x = x.reshape(-1, shape[-1]).at[0].set(-jnp.inf)  # an empty row
  x = x.at[1, : shape[-1] // 2].set(-jnp.inf)  # a half-masked row
  return x.reshape(shape)


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
  counted = aux[:, 2]
  want = sj.cross_entropy_with_integer_labels(x, t, reduction="none", impl="xla")
  np.testing.assert_allclose(loss, want, rtol=2e-6, atol=2e-6)
  want_grad = jax.grad(lambda z: sj.cross_entropy_with_integer_labels(z, t, reduction="sum",
                                                                      impl="xla"))(x)
  np.testing.assert_allclose(grad, want_grad, atol=2e-7)
  np.testing.assert_array_equal(counted, [0.0] + [1.0] * 10)


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


@pytest.mark.parametrize("opts", OPTIONS)
@pytest.mark.parametrize("c,max_tile", [(33, 16384), (300, 128)])
def test_every_option_matches_the_xla_path(rng, opts, c, max_tile, monkeypatch):
  monkeypatch.setattr(_pallas, "MAX_TILE", max_tile)  # the default tile of the public path
  x = _logits(rng, (9, c))
  t = jnp.asarray(rng.integers(0, c, 9)).at[1].set(c - 1).at[3].set(2).at[4].set(2)
  w = jnp.asarray(rng.random(c) + 0.5, jnp.float32)
  kw = {k: v for k, v in opts.items() if k != "class_weights"}

  def loss(z, w, impl, reduction="mean"):
    return sj.cross_entropy_with_integer_labels(
        z, t, class_weights=w if opts.get("class_weights") else None, reduction=reduction,
        impl=impl, **kw)

  for reduction in ("mean", "none"):
    np.testing.assert_allclose(loss(x, w, "pallas", reduction), loss(x, w, "xla", reduction),
                               rtol=3e-6, atol=3e-6)
  gp = jax.grad(loss, (0, 1))(x, w, "pallas")
  gx = jax.grad(loss, (0, 1))(x, w, "xla")
  np.testing.assert_allclose(gp[0], gx[0], atol=3e-7)
  np.testing.assert_allclose(gp[1], gx[1], rtol=3e-5, atol=3e-6)


def test_auto_uses_xla_on_cpu_and_pallas_when_asked(rng):
  x = jnp.asarray(rng.normal(size=(4, 8)), jnp.float32)
  assert "pallas_call" not in str(jax.make_jaxpr(sj.softmax)(x))
  assert "pallas_call" in str(jax.make_jaxpr(lambda z: sj.softmax(z, impl="pallas"))(x))


def test_impl_errors(rng):
  x = jnp.asarray(rng.normal(size=(4, 8)), jnp.float32)
  with pytest.raises(ValueError, match="impl must be one of"):
    sj.softmax(x, impl="triton")
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
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_kernels_lower_for_the_gpu_triton_backend(shape, dtype):
  """Lowering for CUDA needs no GPU: it checks the Triton backend's rules (power-of-two
  array shapes, block layout) for odd row and class counts and the multi-tile path."""
  from jax import export

  x = jax.ShapeDtypeStruct(shape, dtype)
  t = jax.ShapeDtypeStruct(shape[:1], jnp.int32)
  triton = export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")
  w = jax.ShapeDtypeStruct(shape[1:], jnp.float32)
  for fn, args in ((lambda x: _pallas.softmax_2d(x, log=True, interpret=False), (x,)),
                   (lambda x, t: _pallas.xent_2d(x, t, interpret=False), (x, t)),
                   (lambda x, t, w: _pallas.xent_2d(x, t, w, eps=0.1, z_loss=1e-4, softcap=30.0,
                                                    ignore_index=-100, interpret=False),
                    (x, t, w))):
    module = export.export(jax.jit(fn), platforms=["cuda"], disabled_checks=[triton])(*args)
    assert "__gpu$xla.gpu.triton" in module.mlir_module()


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


def test_donation_aliases_the_gradient_to_the_logits_in_the_gpu_program():
  """In the CUDA lowering, the Triton call's gradient output aliases its logits operand."""
  import re

  from jax import export

  x = jax.ShapeDtypeStruct((64, 1000), jnp.float32)
  t = jax.ShapeDtypeStruct((64,), jnp.int32)
  triton = export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")
  aliases = {}
  for donate in (False, True):
    fn = jax.jit(lambda x, t, d=donate: _pallas.xent_2d(x, t, donate=d, interpret=False))
    text = export.export(fn, platforms=["cuda"], disabled_checks=[triton])(x, t).mlir_module()
    aliases[donate] = re.findall(
        r"output_operand_alias<output_tuple_indices = \[(\d+)\], operand_index = (\d+)", text)
  assert aliases[False] == []
  assert aliases[True] == [("1", "0")]  # output 1 (the gradient) takes operand 0 (the logits)


def test_donate_logits_must_be_a_bool(rng):
  x = jnp.asarray(rng.normal(size=(4, 8)), jnp.float32)
  with pytest.raises(TypeError, match="donate_logits must be True or False"):
    sj.cross_entropy_with_integer_labels(x, jnp.zeros(4, jnp.int32), donate_logits="yes")


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("weighted", [False, True])
def test_kernel_gradient_prescaled_by_the_expected_cotangent(rng, dtype, weighted):
  """The kernel writes the gradient times the cotangent the reduction hands every row
  (1 / Σ w_t for the mean); a different cotangent (a scaled loss, a row the prediction
  missed, reduction="none") is rescaled.  Every case equals the XLA path."""
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
  """In ``jax.grad`` of the mean, the gradient is the kernel's output, selected by a cond
  whose taken branch is empty: no second pass over ``[N, C]``."""
  from jax.extend.core import jaxprs_in_params
  x = jnp.asarray(rng.normal(size=(8, 64)), jnp.float32)
  t = jnp.asarray(rng.integers(0, 64, 8))
  jaxpr = jax.make_jaxpr(jax.grad(
      lambda z: sj.cross_entropy_with_integer_labels(z, t, impl="pallas")))(x)

  def conds(jp):
    for eqn in jp.eqns:
      if eqn.primitive.name == "cond":
        yield eqn
      for sub in jaxprs_in_params(eqn.params):
        yield from conds(sub)

  found = [e for e in conds(jaxpr.jaxpr) if any(v.aval.shape == (8, 64) for v in e.outvars)]
  assert len(found) == 1
  false_branch, true_branch = found[0].params["branches"]
  assert true_branch.jaxpr.eqns == []  # the taken branch forwards the kernel's gradient
  assert any(e.primitive.name == "mul" for e in false_branch.jaxpr.eqns)
  # and at run time the predicate holds: the cotangent is exactly the expected one
  taken = []
  cond = jax.lax.cond

  def spy(pred, *args, **kwargs):
    if not isinstance(pred, jax.core.Tracer):  # eager: the backward pass runs op by op
      taken.append(bool(pred))
    return cond(pred, *args, **kwargs)

  monkeypatch.setattr(_pallas.lax, "cond", spy)
  for w in (None, jnp.asarray(rng.random(64) + 0.5, jnp.float32)):
    for reduction in ("mean", "sum"):
      g = jax.grad(lambda z, w=w, r=reduction: sj.cross_entropy_with_integer_labels(
          z, t, class_weights=w, reduction=r, impl="pallas"))(x)
      want = jax.grad(lambda z, w=w, r=reduction: sj.cross_entropy_with_integer_labels(
          z, t, class_weights=w, reduction=r, impl="xla"))(x)
      np.testing.assert_allclose(g, want, atol=1e-6)
  assert taken == [True] * 4
