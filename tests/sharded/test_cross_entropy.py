"""Class-sharded cross-entropy with integer labels (``sharded._cross_entropy`` and
``sharded._row_loss``) against the single-device loss: values, gradients, forward mode
and second order, on 8 simulated CPU devices."""

import itertools
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads

import softmax_jax as sj
from softmax_jax import sharded

# SOFTMAX_JAX_FULL_MATRIX=1 runs every combination of the sampled parametrizations below;
# by default each option set and class count is taken at least once.
FULL_MATRIX = os.environ.get("SOFTMAX_JAX_FULL_MATRIX", "") == "1"


def _cases(full, sample):
  return [pytest.param(*c) for c in (full if FULL_MATRIX else sample)]


def _close(got, want, rtol=1e-12, atol=1e-14):
  chex.assert_trees_all_close(got, want, rtol=rtol, atol=atol)


@pytest.mark.x64
@pytest.mark.parametrize("classes,reduction", _cases(
    list(itertools.product([64, 13], ["mean", "sum", "none"])),
    [(64, "mean"), (13, "sum"), (64, "none")]))
def test_value_and_grad(mesh8, rng, classes, reduction):
  x = jnp.asarray(rng.normal(size=(10, classes)) * 4)
  t = jnp.asarray(rng.integers(0, classes, 10))
  f = lambda z: sharded.cross_entropy_with_integer_labels(z, t, mesh8,  # noqa: E731
                                                          reduction=reduction)
  g = lambda z: sj.cross_entropy_with_integer_labels(z, t, reduction=reduction)  # noqa: E731
  np.testing.assert_allclose(f(x), g(x), rtol=1e-13)
  scalar = (lambda h: lambda z: jnp.sum(h(z)))  # noqa: E731
  np.testing.assert_allclose(jax.jit(jax.grad(scalar(f)))(x), jax.grad(scalar(g))(x),
                             rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-6), (jnp.bfloat16, 1e-2)])
def test_float32_and_bfloat16(mesh8, rng, dtype, tol):
  """The default user configuration (x64 off): float32 and bfloat16 to their rounding."""
  x = jnp.asarray(rng.normal(size=(8, 24)) * 3).astype(dtype)
  t = jnp.asarray(rng.integers(0, 24, 8), jnp.int32)
  f = lambda z: sharded.cross_entropy_with_integer_labels(z, t, mesh8,  # noqa: E731
                                                          label_smoothing=0.1)
  g = lambda z: sj.cross_entropy_with_integer_labels(z, t, label_smoothing=0.1)  # noqa: E731
  assert f(x).dtype == jnp.float32 and jax.grad(f)(x).dtype == dtype
  _close(f(x), g(x), rtol=tol, atol=tol)
  f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
  _close(f32(jax.grad(f)(x)), f32(jax.grad(g)(x)), rtol=10 * tol, atol=tol / 10)


@pytest.mark.x64
@pytest.mark.parametrize("ignore_index", [None, -100])
def test_out_of_range_labels_give_nan_as_unsharded(mesh8, rng, ignore_index):
  # 13 classes are padded to 16 on 8 devices: labels 13 and 15 lie in the −inf padding
  x = jnp.asarray(rng.normal(size=(8, 13)))
  t = jnp.asarray([3, -1, -100, 13, 15, 16, 2**32 + 1, 12], jnp.int64)
  f = lambda z: sharded.cross_entropy_with_integer_labels(  # noqa: E731
      z, t, mesh8, reduction="none", ignore_index=ignore_index)
  g = lambda z: sj.cross_entropy_with_integer_labels(  # noqa: E731
      z, t, reduction="none", ignore_index=ignore_index)
  got, want = f(x), g(x)
  bad = np.ones(8, bool)
  bad[[0, 7]] = False
  if ignore_index is not None:
    bad[2] = False
    assert float(got[2]) == 0.0
  np.testing.assert_array_equal(np.isnan(got), bad)  # 2**32 + 1 is not read as 1
  _close(got, want)
  grad = jax.jit(jax.grad(lambda z: jnp.sum(jnp.where(jnp.isnan(f(z)), 0, f(z)))))(x)
  assert np.isnan(np.asarray(grad)[bad]).all() and np.isfinite(np.asarray(grad)[~bad]).all()
  # a label at a class that where masks out is NaN too
  where = jnp.ones(x.shape, bool).at[0, 3].set(False)
  loss = sharded.cross_entropy_with_integer_labels(x, t, mesh8, where=where, reduction="none")
  assert np.isnan(float(loss[0]))
  assert np.isnan(float(sharded.cross_entropy_with_integer_labels(x, t, mesh8)))


def test_host_int64_labels_in_the_default_32_bit_mode(mesh8, rng):
  """With x64 off, NumPy int64 labels of 2**32 + 1 are INVALID (NaN), not class 1."""
  x = jnp.asarray(rng.normal(size=(8, 16)), jnp.float32)
  t = np.asarray([2**32 + 1, 1, 2, 3, 4, 5, 6, 7], np.int64)
  loss = sharded.cross_entropy_with_integer_labels(x, t, mesh8, reduction="none")
  assert np.isnan(loss[0]) and np.isfinite(loss[1:]).all()


def test_labels_in_their_own_dtype(mesh8, rng):
  x = jnp.asarray(rng.normal(size=(8, 16)), jnp.float32)
  t8 = jnp.asarray([0, 1, 2, 255, 4, 5, 6, 15], jnp.uint8)
  got = sharded.cross_entropy_with_integer_labels(x, t8, mesh8, reduction="none",
                                                  ignore_index=255)
  _close(got, sj.cross_entropy_with_integer_labels(x, t8, reduction="none", ignore_index=255),
         rtol=1e-6, atol=1e-6)
  assert float(got[3]) == 0.0
  with pytest.raises(ValueError, match="ignore_index=-100 cannot occur in labels of dtype uint8"):
    sharded.cross_entropy_with_integer_labels(x, t8, mesh8, ignore_index=-100)


@pytest.mark.x64
def test_rows_without_a_valid_class(mesh8, rng):
  x = jnp.asarray(rng.normal(size=(6, 13))).at[1].set(-jnp.inf)
  where = jnp.ones(x.shape, bool).at[4].set(False)
  t = jnp.asarray([0, 3, 5, 12, 7, 1])
  for reduction in ("none", "mean", "sum"):
    f = lambda z, r=reduction: sharded.cross_entropy_with_integer_labels(  # noqa: E731
        z, t, mesh8, where=where, reduction=r)
    g = lambda z, r=reduction: sj.cross_entropy_with_integer_labels(  # noqa: E731
        z, t, where=where, reduction=r)
    _close(f(x), g(x))
    scalar = lambda h: lambda z: jnp.sum(h(z))  # noqa: E731
    grad = jax.jit(jax.grad(scalar(f)))(x)
    _close(grad, jax.grad(scalar(g))(x))
    np.testing.assert_array_equal(np.asarray(grad)[[1, 4]], 0.0)
  loss = sharded.cross_entropy_with_integer_labels(x, t, mesh8, where=where, reduction="none")
  np.testing.assert_array_equal(np.asarray(loss)[[1, 4]], 0.0)
  total = sharded.cross_entropy_with_integer_labels(x, t, mesh8, where=where, reduction="sum")
  mean = sharded.cross_entropy_with_integer_labels(x, t, mesh8, where=where)
  np.testing.assert_allclose(mean, total / 4, rtol=1e-15)  # the two empty rows do not count


OPTIONS = [
    {"label_smoothing": 0.2},
    {"class_weights": True, "ignore_index": 5},
    {"class_weights": True, "label_smoothing": 0.1, "where": True},
    {"z_loss": 1e-2, "logit_softcap": 3.0, "ignore_index": -100},
    {"class_weights": True, "label_smoothing": 0.3, "z_loss": 1e-3, "logit_softcap": 5.0,
     "where": True, "ignore_index": 5},
]


def _option_args(rng, opts, n, c, t):
  kw = dict(opts)
  if kw.get("class_weights"):
    kw["class_weights"] = jnp.asarray(rng.random(c) + 0.5)
  if kw.get("where"):
    kw["where"] = jnp.asarray(rng.random((n, c)) > 0.25).at[jnp.arange(n), t % c].set(True)
  return kw


@pytest.mark.x64
@pytest.mark.parametrize("opts,classes", _cases(
    list(itertools.product(OPTIONS, [16, 13])),
    [(o, [16, 13][i % 2]) for i, o in enumerate(OPTIONS)]))
def test_options_equal_single_device(mesh8, rng, classes, opts):
  n = 8
  x = jnp.asarray(rng.normal(size=(n, classes)) * 3)
  t = jnp.asarray(rng.integers(0, classes, n)).at[0].set(5).at[1].set(-100 % classes)
  kw = _option_args(rng, opts, n, classes, t)
  cw = kw.pop("class_weights", None)
  argnums = (0,) if cw is None else (0, 1)
  for reduction in ("mean", "none"):
    def f(z, w, r=reduction):
      return jnp.sum(sharded.cross_entropy_with_integer_labels(
          z, t, mesh8, class_weights=w, reduction=r, **kw))

    def g(z, w, r=reduction):
      return jnp.sum(sj.cross_entropy_with_integer_labels(z, t, class_weights=w, reduction=r,
                                                          **kw))

    (got, grad), (want, want_grad) = (jax.jit(jax.value_and_grad(h, argnums))(x, cw)
                                      for h in (f, g))
    _close(got, want, rtol=1e-13)
    _close(grad, want_grad, atol=1e-15)


@pytest.mark.x64
def test_label_entry_from_the_tail(mesh8):
  """The gradient's label entry 1 − y_t is exact where y_t rounds to 1 (``complement``)."""
  x = jnp.asarray([[40.0, 0.0, -1.0]])  # three classes on three of the eight devices
  t = jnp.asarray([0])
  got = jax.grad(lambda z: sharded.cross_entropy_with_integer_labels(z, t, mesh8))(x)
  want = jax.grad(lambda z: sj.cross_entropy_with_integer_labels(z, t))(x)
  exact = -(np.exp(-40) + np.exp(-41)) / (1 + np.exp(-40) + np.exp(-41))  # −(1 − y_0)
  np.testing.assert_allclose(got[0, 0], exact, rtol=1e-15)  # ≈ −5.81e-18, not 0
  np.testing.assert_array_equal(got, want)
  assert abs(float(jnp.sum(got))) <= 2 * np.spacing(abs(exact))
  x2 = jnp.asarray([[40.0, 0.0]])
  g2 = jax.grad(lambda z: sharded.cross_entropy_with_integer_labels(z, t, mesh8))(x2)
  np.testing.assert_allclose(g2[0, 0], -np.exp(-40) / (1 + np.exp(-40)), rtol=1e-15)
  loss = sharded.cross_entropy_with_integer_labels(x2, t, mesh8)
  np.testing.assert_allclose(loss, np.log1p(np.exp(-40)), rtol=1e-15)  # log1p(tail), not 0


def _second_order_case(mesh8, rng, opts):
  n, c = 3, 5
  x = jnp.asarray(rng.normal(size=(n, c)) * 2)
  t = jnp.asarray([1, 4, 2])
  kw = _option_args(rng, opts, n, c, t)
  cw = kw.pop("class_weights", None)

  def f(z, w=cw):
    return sharded.cross_entropy_with_integer_labels(z, t, mesh8, class_weights=w, **kw)

  def g(z, w=cw):
    return sj.cross_entropy_with_integer_labels(z, t, class_weights=w, **kw)

  return x, cw, f, g, jnp.asarray(rng.normal(size=x.shape))


@pytest.mark.x64
@pytest.mark.parametrize("opts", [{}, OPTIONS[-1]])
def test_forward_mode(mesh8, rng, opts):
  """``jax.jvp``, ``jax.jacfwd`` and ``jax.linearize`` (in the logits, and in the class
  weights) and ``jax.hessian`` (forward over reverse) equal those of the single-device
  loss."""
  x, cw, f, g, v = _second_order_case(mesh8, rng, opts)
  jvp = jax.jit(jax.jvp, static_argnums=0)
  _close(jvp(f, (x,), (v,)), jvp(g, (x,), (v,)), atol=1e-15)
  _close(jax.jit(jax.jacfwd(f))(x), jax.jit(jax.jacfwd(g))(x), atol=1e-15)
  linearized = lambda h: jax.jit(lambda x, v: jax.linearize(h, x)[1](v))(x, v)  # noqa: E731
  _close(linearized(f), linearized(g), atol=1e-15)
  _close(jax.jit(jax.hessian(f))(x), jax.jit(jax.hessian(g))(x), atol=1e-14)
  if cw is not None:
    _close(jax.jit(jax.jacfwd(lambda w: f(x, w)))(cw),
           jax.jit(jax.jacfwd(lambda w: g(x, w)))(cw), atol=1e-15)


@pytest.mark.x64
@pytest.mark.parametrize("opts", [OPTIONS[-1]] + ([{}] if FULL_MATRIX else []))
def test_second_order(mesh8, rng, opts):
  """``jax.jacrev`` of the gradient and grad of grad (reverse over reverse) and
  ``jax.hessian`` in the class weights equal those of the single-device loss, and the
  derivatives to order 2 match central differences (``jax.hessian`` in the logits:
  :func:`test_forward_mode`)."""
  x, cw, f, g, v = _second_order_case(mesh8, rng, opts)
  _close(jax.jit(jax.jacrev(jax.grad(f)))(x), jax.jit(jax.hessian(g))(x), atol=1e-14)
  grad_of_grad = lambda h: jax.grad(lambda z: jnp.sum(jax.grad(h)(z) * v))  # noqa: E731
  _close(jax.jit(grad_of_grad(f))(x), jax.jit(grad_of_grad(g))(x), atol=1e-14)
  check_grads(jax.jit(f), (x,), order=2, modes=["fwd", "rev"])  # central differences
  if cw is not None:
    _close(jax.jit(jax.hessian(lambda w: f(x, w)))(cw),
           jax.jit(jax.hessian(lambda w: g(x, w)))(cw), atol=1e-14)


@pytest.mark.x64
def test_local_variant_inside_a_user_shard_map(mesh2x4, rng):
  """``cross_entropy_with_integer_labels_local`` in the caller's own shard_map (Megatron's
  layout: the classes split over "model", the rows over "data")."""
  n, c = 8, 24
  x = jnp.asarray(rng.normal(size=(n, c)) * 3)
  t = jnp.asarray(rng.integers(0, c, n)).at[2].set(-100)
  cw = jnp.asarray(rng.random(c) + 0.5)
  kw = dict(ignore_index=-100, label_smoothing=0.1, z_loss=1e-3)

  def body(z, labels, w):
    loss = sharded.cross_entropy_with_integer_labels_local(
        z, labels, axis_name="model", class_weights=w, batch_axis="data", **kw)
    rows = sharded.cross_entropy_with_integer_labels_local(
        z, labels, axis_name="model", class_weights=w, reduction="none", **kw)
    return loss, rows

  specs = dict(in_specs=(P("data", "model"), P("data"), P("model")), out_specs=(P(), P("data")))
  f = jax.jit(jax.shard_map(body, mesh=mesh2x4, **specs))
  loss, rows = f(x, t, cw)
  _close(loss, sj.cross_entropy_with_integer_labels(x, t, class_weights=cw, **kw), rtol=1e-13)
  _close(rows, sj.cross_entropy_with_integer_labels(x, t, class_weights=cw, reduction="none",
                                                    **kw), rtol=1e-13)
  grad = jax.jit(jax.grad(lambda z, w: f(z, t, w)[0], (0, 1)))(x, cw)
  want = jax.grad(lambda z, w: sj.cross_entropy_with_integer_labels(z, t, class_weights=w, **kw),
                  (0, 1))(x, cw)
  _close(grad, want, atol=1e-15)
  with pytest.raises(ValueError, match="axis_name='model' is not bound; call this function "
                                       "inside jax.shard_map"):
    sharded.cross_entropy_with_integer_labels_local(x, t, axis_name="model")
  with pytest.raises(ValueError, match=r"class_weights has shape \(24,\), expected \(6,\)"):
    jax.shard_map(body, mesh=mesh2x4, **dict(specs, in_specs=(P("data", "model"), P("data"),
                                                              P())))(x, t, cw)


@pytest.mark.x64
def test_rows_and_classes_both_sharded(mesh2x4, rng):
  x = jnp.asarray(rng.normal(size=(8, 24)))
  t = jnp.asarray(rng.integers(0, 24, 8))
  f = lambda z: sharded.cross_entropy_with_integer_labels(z, t, mesh2x4,  # noqa: E731
                                                          batch_axis="data")
  np.testing.assert_allclose(f(x), sj.cross_entropy_with_integer_labels(x, t), rtol=1e-14)
  np.testing.assert_allclose(jax.jit(jax.grad(f))(x),
                             jax.grad(sj.cross_entropy_with_integer_labels)(x, t), atol=1e-15)
  g = lambda z: sharded.cross_entropy_with_integer_labels(  # noqa: E731
      z, t, mesh2x4, batch_axis="data", reduction="none", label_smoothing=0.1)
  _close(g(x), sj.cross_entropy_with_integer_labels(x, t, reduction="none", label_smoothing=0.1),
         rtol=1e-14)
  s = lambda z: sharded.cross_entropy_with_integer_labels(  # noqa: E731
      z, t, mesh2x4, batch_axis="data", reduction="sum")
  np.testing.assert_allclose(s(x), sj.cross_entropy_with_integer_labels(x, t, reduction="sum"),
                             rtol=1e-14)


def test_errors(mesh8, rng):
  x = jnp.asarray(rng.normal(size=(6, 16)), jnp.float32)
  t = jnp.zeros(6, jnp.int32)
  with pytest.raises(ValueError, match="labels must be integers of shape"):
    sharded.cross_entropy_with_integer_labels(x, t[:3], mesh8)
  with pytest.raises(TypeError, match="labels must be an integer array"):
    sharded.cross_entropy_with_integer_labels(x, t.astype(jnp.float32), mesh8)
  with pytest.raises(ValueError, match="reduction must be"):
    sharded.cross_entropy_with_integer_labels(x, t, mesh8, reduction="max")
  with pytest.raises(ValueError, match="label_smoothing must lie in"):
    sharded.cross_entropy_with_integer_labels(x, t, mesh8, label_smoothing=2.0)
  with pytest.raises(ValueError, match="z_loss must be a finite number"):
    sharded.cross_entropy_with_integer_labels(x, t, mesh8, z_loss=-1.0)
  with pytest.raises(ValueError, match="logit_softcap must be a finite number"):
    sharded.cross_entropy_with_integer_labels(x, t, mesh8, logit_softcap=0.0)
  with pytest.raises(ValueError, match=r"class_weights has shape \(3,\), expected \(16,\)"):
    sharded.cross_entropy_with_integer_labels(x, t, mesh8, class_weights=jnp.ones(3))
  with pytest.raises(ValueError, match="where has shape"):
    sharded.cross_entropy_with_integer_labels(x, t, mesh8, where=jnp.ones((6, 3), bool))
  with pytest.raises(ValueError, match="axis_name='vocab' is not an axis of the mesh"):
    sharded.cross_entropy_with_integer_labels(x, t, mesh8, axis_name="vocab")
