"""Class-sharded softmax / cross-entropy and data-parallel training on 8 simulated CPU devices."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, Mesh
from jax.test_util import check_grads

import softmax_jax as sj
from softmax_jax import sharded
from softmax_jax.train import TrainConfig, fit, make_epoch, make_optimizer
from softmax_jax.train._datasets._builtin import load_iris

pytestmark = pytest.mark.x64


def _mesh(shape, names):
  return Mesh(np.array(jax.devices()[:int(np.prod(shape))]).reshape(shape), names)


@pytest.fixture(scope="module")
def mesh8():
  assert jax.device_count() == 8, "conftest sets 8 simulated CPU devices"
  return _mesh((8,), ("model",))


@pytest.fixture(scope="module")
def mesh2x4():
  return _mesh((2, 4), ("data", "model"))


def _close(got, want, rtol=1e-12, atol=1e-14):
  """Pytrees equal to ``rtol``/``atol``, NaN where the reference is NaN."""
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


@pytest.mark.parametrize("classes", [32, 13, 5])  # divisible, uneven, fewer than devices
@pytest.mark.parametrize("fn,ref", [(sharded.softmax, sj.softmax),
                                    (sharded.log_softmax, sj.log_softmax)])
def test_softmax_family_equals_single_device(mesh8, rng, classes, fn, ref):
  x = jnp.asarray(rng.normal(size=(6, classes)) * 5)
  np.testing.assert_allclose(fn(x, mesh8), ref(x), rtol=1e-14, atol=1e-14)
  v = jnp.asarray(rng.normal(size=x.shape))
  got = jax.grad(lambda z: jnp.sum(fn(z, mesh8) * v))(x)
  want = jax.grad(lambda z: jnp.sum(ref(z) * v))(x)
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("fn,ref", [(sharded.softmax, sj.softmax),
                                    (sharded.log_softmax, sj.log_softmax)])
def test_softmax_family_empty_rows_and_where(mesh8, rng, fn, ref):
  # row 1 is all −inf, row 2 is masked out by where, row 3 has one valid class
  x = jnp.asarray(rng.normal(size=(4, 13))).at[1].set(-jnp.inf)
  where = jnp.asarray(rng.random((4, 13)) > 0.3).at[2].set(False).at[3].set(False)
  where = where.at[3, 7].set(True)
  got, want = fn(x, mesh8, where=where), ref(x, where=where)
  _close(got, want, atol=1e-15)
  assert not np.isnan(np.asarray(got)).any()
  np.testing.assert_array_equal(fn(x, mesh8)[1], 0.0 if fn is sharded.softmax else -np.inf)
  v = jnp.asarray(rng.normal(size=x.shape))
  masked_sum = lambda y: jnp.sum(jnp.where(jnp.isfinite(y), y, 0) * v)  # noqa: E731
  g = jax.grad(lambda z: masked_sum(fn(z, mesh8, where=where)))(x)
  assert np.isfinite(np.asarray(g)).all()
  _close(g, jax.grad(lambda z: masked_sum(ref(z, where=where)))(x), atol=1e-15)
  np.testing.assert_array_equal(g[1:3], 0.0)


@pytest.mark.parametrize("classes", [64, 13])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_value_and_grad(mesh8, rng, classes, reduction):
  x = jnp.asarray(rng.normal(size=(10, classes)) * 4)
  t = jnp.asarray(rng.integers(0, classes, 10))
  f = jax.jit(lambda z: sharded.cross_entropy_with_integer_labels(z, t, mesh8,
                                                                  reduction=reduction))
  g = lambda z: sj.cross_entropy_with_integer_labels(z, t, reduction=reduction)  # noqa: E731
  np.testing.assert_allclose(f(x), g(x), rtol=1e-13)
  scalar = (lambda h: lambda z: jnp.sum(h(z)))  # noqa: E731
  np.testing.assert_allclose(jax.grad(scalar(f))(x), jax.grad(scalar(g))(x), rtol=1e-12,
                             atol=1e-15)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-6), (jnp.bfloat16, 1e-2)])
def test_cross_entropy_float32_default_config(mesh8, rng, dtype, tol):
  """The default user dtype (float32) and bfloat16 are covered too, to their rounding."""
  x = jnp.asarray(rng.normal(size=(8, 24)) * 3).astype(dtype)
  t = jnp.asarray(rng.integers(0, 24, 8), jnp.int32)
  f = lambda z: sharded.cross_entropy_with_integer_labels(z, t, mesh8,  # noqa: E731
                                                          label_smoothing=0.1)
  g = lambda z: sj.cross_entropy_with_integer_labels(z, t, label_smoothing=0.1)  # noqa: E731
  assert f(x).dtype == jnp.float32 and jax.grad(f)(x).dtype == dtype
  _close(f(x), g(x), rtol=tol, atol=tol)
  f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
  _close(f64(jax.grad(f)(x)), f64(jax.grad(g)(x)), rtol=10 * tol, atol=tol / 10)
  _close(f64(sharded.softmax(x, mesh8)), f64(sj.softmax(x)), rtol=tol, atol=tol / 10)


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
  grad = jax.grad(lambda z: jnp.sum(jnp.where(jnp.isnan(f(z)), 0, f(z))))(x)
  assert np.isnan(np.asarray(grad)[bad]).all() and np.isfinite(np.asarray(grad)[~bad]).all()
  # a label at a class that where masks out is NaN too
  where = jnp.ones(x.shape, bool).at[0, 3].set(False)
  loss = sharded.cross_entropy_with_integer_labels(x, t, mesh8, where=where, reduction="none")
  assert np.isnan(float(loss[0]))
  assert np.isnan(float(sharded.cross_entropy_with_integer_labels(x, t, mesh8)))


def test_labels_in_their_own_dtype(mesh8, rng):
  x = jnp.asarray(rng.normal(size=(8, 16)))
  t8 = jnp.asarray([0, 1, 2, 255, 4, 5, 6, 15], jnp.uint8)
  got = sharded.cross_entropy_with_integer_labels(x, t8, mesh8, reduction="none",
                                                  ignore_index=255)
  _close(got, sj.cross_entropy_with_integer_labels(x, t8, reduction="none", ignore_index=255))
  assert float(got[3]) == 0.0
  with pytest.raises(ValueError, match="ignore_index=-100 cannot occur in labels of dtype uint8"):
    sharded.cross_entropy_with_integer_labels(x, t8, mesh8, ignore_index=-100)


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
    grad = jax.grad(scalar(f))(x)
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


@pytest.mark.parametrize("classes", [16, 13])
@pytest.mark.parametrize("opts", OPTIONS)
def test_options_equal_single_device(mesh8, rng, classes, opts):
  n = 8
  x = jnp.asarray(rng.normal(size=(n, classes)) * 3)
  t = jnp.asarray(rng.integers(0, classes, n)).at[0].set(5).at[1].set(-100 % classes)
  kw = _option_args(rng, opts, n, classes, t)
  cw = kw.pop("class_weights", None)
  for reduction in ("mean", "none"):
    def f(z, w, r=reduction):
      return jnp.sum(sharded.cross_entropy_with_integer_labels(
          z, t, mesh8, class_weights=w, reduction=r, **kw))

    def g(z, w, r=reduction):
      return jnp.sum(sj.cross_entropy_with_integer_labels(z, t, class_weights=w, reduction=r,
                                                          **kw))

    _close(f(x, cw), g(x, cw), rtol=1e-13)
    argnums = (0,) if cw is None else (0, 1)
    _close(jax.grad(f, argnums)(x, cw), jax.grad(g, argnums)(x, cw), atol=1e-15)


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


@pytest.mark.parametrize("opts", [{}, OPTIONS[-1]])
def test_forward_mode_and_second_order(mesh8, rng, opts):
  n, c = 3, 5
  x = jnp.asarray(rng.normal(size=(n, c)) * 2)
  t = jnp.asarray([1, 4, 2])
  kw = _option_args(rng, opts, n, c, t)
  cw = kw.pop("class_weights", None)
  f = lambda z: sharded.cross_entropy_with_integer_labels(z, t, mesh8, class_weights=cw,  # noqa: E731
                                                          **kw)
  g = lambda z: sj.cross_entropy_with_integer_labels(z, t, class_weights=cw, **kw)  # noqa: E731
  v = jnp.asarray(rng.normal(size=x.shape))
  _close(jax.jvp(f, (x,), (v,)), jax.jvp(g, (x,), (v,)), atol=1e-15)
  _close(jax.jacfwd(f)(x), jax.jacfwd(g)(x), atol=1e-15)
  _close(jax.linearize(f, x)[1](v), jax.linearize(g, x)[1](v), atol=1e-15)
  hess = jax.hessian(f)(x)
  _close(hess, jax.hessian(g)(x), atol=1e-14)
  _close(jax.jacrev(jax.grad(f))(x), hess, atol=1e-14)
  grad_of_grad = lambda h: jax.grad(lambda z: jnp.sum(jax.grad(h)(z) * v))  # noqa: E731
  _close(grad_of_grad(f)(x), grad_of_grad(g)(x), atol=1e-14)
  check_grads(f, (x,), order=2, modes=["fwd", "rev"])  # against central differences
  if cw is not None:  # forward mode in the class weights too
    fw = lambda w: sharded.cross_entropy_with_integer_labels(x, t, mesh8, class_weights=w,  # noqa: E731
                                                             **kw)
    gw = lambda w: sj.cross_entropy_with_integer_labels(x, t, class_weights=w, **kw)  # noqa: E731
    _close(jax.jacfwd(fw)(cw), jax.jacfwd(gw)(cw), atol=1e-15)
    _close(jax.hessian(fw)(cw), jax.hessian(gw)(cw), atol=1e-14)


def test_local_variant_inside_a_user_shard_map(mesh2x4, rng):
  """The ``*_local`` functions in the caller's own shard_map (Megatron's layout: the
  classes split over "model", the rows over "data")."""
  from jax.sharding import PartitionSpec as P

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
    y = sharded.softmax_local(z, axis_name="model")
    return loss, rows, y, sharded.log_softmax_local(z, axis_name="model")

  f = jax.jit(jax.shard_map(
      body, mesh=mesh2x4, in_specs=(P("data", "model"), P("data"), P("model")),
      out_specs=(P(), P("data"), P("data", "model"), P("data", "model"))))
  loss, rows, y, logy = f(x, t, cw)
  _close(loss, sj.cross_entropy_with_integer_labels(x, t, class_weights=cw, **kw), rtol=1e-13)
  _close(rows, sj.cross_entropy_with_integer_labels(x, t, class_weights=cw, reduction="none",
                                                    **kw), rtol=1e-13)
  _close(y, sj.softmax(x), atol=1e-15)
  _close(logy, sj.log_softmax(x), atol=1e-14)
  grad = jax.grad(lambda z, w: f(z, t, w)[0], (0, 1))(x, cw)
  want = jax.grad(lambda z, w: sj.cross_entropy_with_integer_labels(z, t, class_weights=w, **kw),
                  (0, 1))(x, cw)
  _close(grad, want, atol=1e-15)
  with pytest.raises(ValueError, match="axis_name='model' is not bound; call this function "
                                       "inside jax.shard_map"):
    sharded.cross_entropy_with_integer_labels_local(x, t, axis_name="model")
  with pytest.raises(ValueError, match=r"class_weights has shape \(24,\), expected \(6,\)"):
    jax.shard_map(body, mesh=mesh2x4, in_specs=(P("data", "model"), P("data"), P()),
                  out_specs=(P(), P("data"), P("data", "model"), P("data", "model")))(x, t, cw)


def test_rows_and_classes_both_sharded(mesh2x4, rng):
  x = jnp.asarray(rng.normal(size=(8, 24)))
  t = jnp.asarray(rng.integers(0, 24, 8))
  f = lambda z: sharded.cross_entropy_with_integer_labels(z, t, mesh2x4,  # noqa: E731
                                                          batch_axis="data")
  np.testing.assert_allclose(f(x), sj.cross_entropy_with_integer_labels(x, t), rtol=1e-14)
  np.testing.assert_allclose(jax.grad(f)(x),
                             jax.grad(sj.cross_entropy_with_integer_labels)(x, t), atol=1e-15)
  np.testing.assert_allclose(sharded.softmax(x, mesh2x4, batch_axis="data"), sj.softmax(x),
                             rtol=1e-14)
  g = lambda z: sharded.cross_entropy_with_integer_labels(  # noqa: E731
      z, t, mesh2x4, batch_axis="data", reduction="none", label_smoothing=0.1)
  _close(g(x), sj.cross_entropy_with_integer_labels(x, t, reduction="none", label_smoothing=0.1),
         rtol=1e-14)


def _all_reduces(fn, x):
  """(number of all-reduce ops, elements they reduce) in the compiled program."""
  hlo = jax.jit(fn).lower(x).compile().as_text()
  ops = [line for line in hlo.splitlines() if re.search(r"= .*all-reduce(-start)?\(", line)]
  elements = 0
  for line in ops:
    result_type = line.split("=", 1)[1].split("all-reduce")[0]
    for dims in re.findall(r"f32\[([\d,]*)\]", result_type):
      elements += int(np.prod([int(d) for d in dims.split(",") if d]))
  return len(ops), elements


def test_two_collectives_and_none_in_the_backward_pass(mesh8, rng):
  """Reads the compiled program (a test of internals): one pmax of ``[n]`` and one psum of
  the tuple (s, tail, z_t) of ``[n]`` each; the smoothing and class-weight sums join the
  psum; the gradient y − t is local to each device (the tangent's psum transposes to a
  no-op), so value_and_grad has the forward's collectives only."""
  n = 64
  x = jnp.asarray(rng.normal(size=(n, 32)), jnp.float32)
  t = jnp.asarray(rng.integers(0, 32, n))
  loss = lambda z: sharded.cross_entropy_with_integer_labels(z, t, mesh8)  # noqa: E731
  fwd = _all_reduces(loss, x)
  assert fwd == (2, 4 * n)  # pmax m; psum (s, tail, z_t)
  assert _all_reduces(jax.value_and_grad(loss), x) == fwd
  full = lambda z: sharded.cross_entropy_with_integer_labels(  # noqa: E731
      z, t, mesh8, class_weights=jnp.ones(32, jnp.float32), label_smoothing=0.1, z_loss=1e-4,
      logit_softcap=30.0, ignore_index=-100)
  both = _all_reduces(jax.value_and_grad(full), x)
  assert both == (2, 8 * n)  # psum (s, tail, z_t, w_t, K, Σw, Σw(z − m))
  assert _all_reduces(lambda z: sharded.softmax(z, mesh8), x) == (2, 2 * n)  # pmax m; psum s


def test_linear_cross_entropy(mesh8, mesh2x4, rng):
  h = jnp.asarray(rng.normal(size=(8, 5)))
  w = jnp.asarray(rng.normal(size=(5, 32)))
  b = jnp.asarray(rng.normal(size=32))
  t = jnp.asarray(rng.integers(0, 32, 8))
  ref = lambda h, w, b: sj.cross_entropy_with_integer_labels(h @ w + b, t)  # noqa: E731
  for mesh, batch_axis in ((mesh8, None), (mesh2x4, "data")):
    f = lambda h, w, b, mesh=mesh, ax=batch_axis: sharded.linear_cross_entropy(  # noqa: E731
        h, w, t, mesh, bias=b, batch_axis=ax)
    np.testing.assert_allclose(f(h, w, b), ref(h, w, b), rtol=1e-14)
    for got, want in zip(jax.grad(f, (0, 1, 2))(h, w, b), jax.grad(ref, (0, 1, 2))(h, w, b),
                         strict=True):
      np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
  with pytest.raises(ValueError, match="30 classes do not split evenly over the 8 devices"):
    sharded.linear_cross_entropy(h, w[:, :30], t, mesh8)


def test_linear_cross_entropy_options(mesh2x4, rng):
  h = jnp.asarray(rng.normal(size=(8, 5)))
  w = jnp.asarray(rng.normal(size=(5, 32)))
  t = jnp.asarray(rng.integers(0, 32, 8)).at[3].set(-100).at[5].set(32)
  cw = jnp.asarray(rng.random(32) + 0.5)
  kw = dict(ignore_index=-100, label_smoothing=0.1, z_loss=1e-3, logit_softcap=4.0)
  for reduction in ("none", "sum"):
    got = sharded.linear_cross_entropy(h, w, t, mesh2x4, batch_axis="data", class_weights=cw,
                                       reduction=reduction, **kw)
    want = sj.cross_entropy_with_integer_labels(h @ w, t, class_weights=cw,
                                                reduction=reduction, **kw)
    _close(got, want, rtol=1e-13)
  ok = t.at[5].set(1)
  f = lambda h, w, cw: sharded.linear_cross_entropy(h, w, ok, mesh2x4, batch_axis="data",  # noqa: E731
                                                    class_weights=cw, **kw)
  g = lambda h, w, cw: sj.cross_entropy_with_integer_labels(h @ w, ok, class_weights=cw, **kw)  # noqa: E731
  _close(f(h, w, cw), g(h, w, cw), rtol=1e-13)
  _close(jax.grad(f, (0, 1, 2))(h, w, cw), jax.grad(g, (0, 1, 2))(h, w, cw), atol=1e-14)
  _close(jax.jvp(lambda h: f(h, w, cw), (h,), (h,)), jax.jvp(lambda h: g(h, w, cw), (h,), (h,)),
         atol=1e-14)


def test_errors(mesh8, rng):
  x = jnp.asarray(rng.normal(size=(6, 16)))
  t = jnp.zeros(6, jnp.int32)
  with pytest.raises(ValueError, match="axis_name='vocab' is not an axis of the mesh"):
    sharded.softmax(x, mesh8, axis_name="vocab")
  with pytest.raises(ValueError, match="batch size 5 is not divisible by the 2 devices"):
    sharded.softmax(x[:5], _mesh((2, 4), ("data", "model")), batch_axis="data")
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
  explicit = jax.make_mesh((8,), ("model",), axis_types=(AxisType.Explicit,))
  with pytest.raises(ValueError, match="Explicit axes"):
    sharded.softmax(x, explicit)
  with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
    sharded.softmax(x, "model")


@pytest.fixture(scope="module")
def iris():
  ds = load_iris()
  return ((ds.x - ds.x.mean(0)) / ds.x.std(0)).astype(np.float32), ds.y


@pytest.mark.parametrize("cfg", [
    TrainConfig(epochs=6, batch_size=32),
    TrainConfig(epochs=6, batch_size=None, optimizer="lbfgs"),  # 150 rows padded to 152
    TrainConfig(epochs=4, batch_size=16, hidden=8, optimizer="momentum"),
])
def test_data_parallel_training_equals_single_device(iris, cfg):
  x, y = iris
  mesh = _mesh((8,), ("data",))
  one = fit(x, y, cfg, val=(x[:40], y[:40]))
  many = fit(x, y, cfg, val=(x[:40], y[:40]), mesh=mesh)
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(many.params), strict=True):
    np.testing.assert_allclose(np.asarray(b), a, rtol=2e-5, atol=2e-6)
  assert many.params["W"].sharding.is_fully_replicated
  np.testing.assert_allclose([r["val_loss"] for r in many.history],
                             [r["val_loss"] for r in one.history], rtol=2e-5)


def test_data_parallel_gradients_are_all_reduced(iris):
  x, y = iris
  mesh = _mesh((8,), ("data",))
  cfg = TrainConfig(epochs=1, batch_size=32)
  opt = make_optimizer("adam", 0.01)
  from softmax_jax.train import init_state
  from softmax_jax.train._loop import replicate

  state = replicate(init_state(cfg, 4, 3, optimizer=opt), mesh)
  args = replicate((x, y.astype(np.int32), x[:0], y[:0].astype(np.int32)), mesh)
  hlo = make_epoch(cfg, opt, mesh=mesh).lower(state, *args).compile().as_text()
  assert "all-reduce" in hlo


def test_data_parallel_errors(iris):
  x, y = iris
  with pytest.raises(ValueError, match="batch_size=30 is not a multiple of the 8 devices"):
    fit(x, y, TrainConfig(batch_size=30), mesh=_mesh((8,), ("data",)))
  with pytest.raises(ValueError, match="data_axis='data' is not an axis of the mesh"):
    fit(x, y, TrainConfig(), mesh=_mesh((8,), ("model",)))
