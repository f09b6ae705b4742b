"""Class-sharded softmax / cross-entropy and data-parallel training on 8 simulated CPU devices."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, Mesh

import softmax_jax as sj
from softmax_jax import sharded
from softmax_jax._data import load_iris
from softmax_jax.train import TrainConfig, fit, make_epoch, make_optimizer


def _mesh(shape, names):
  return Mesh(np.array(jax.devices()[:int(np.prod(shape))]).reshape(shape), names)


@pytest.fixture(scope="module")
def mesh8():
  assert jax.device_count() == 8, "conftest sets 8 simulated CPU devices"
  return _mesh((8,), ("model",))


@pytest.fixture(scope="module")
def mesh2x4():
  return _mesh((2, 4), ("data", "model"))


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


def test_three_collectives_of_n_floats_and_none_in_the_backward_pass(mesh8, rng):
  n = 64
  x = jnp.asarray(rng.normal(size=(n, 32)), jnp.float32)
  t = jnp.asarray(rng.integers(0, 32, n))
  loss = lambda z: sharded.cross_entropy_with_integer_labels(z, t, mesh8)  # noqa: E731
  fwd = _all_reduces(loss, x)
  both = _all_reduces(jax.value_and_grad(loss), x)
  assert fwd[1] == 3 * n  # the row max, the exponential sum, the target logit
  assert both == fwd  # the gradient y − t is local to each device


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


def test_errors(mesh8, rng):
  x = jnp.asarray(rng.normal(size=(6, 16)))
  t = jnp.zeros(6, jnp.int32)
  with pytest.raises(ValueError, match="axis_name='vocab' is not an axis of the mesh"):
    sharded.softmax(x, mesh8, axis_name="vocab")
  with pytest.raises(ValueError, match="batch size 5 is not divisible by the 2 devices"):
    sharded.softmax(x[:5], _mesh((2, 4), ("data", "model")), batch_axis="data")
  with pytest.raises(ValueError, match="labels must be integers of shape"):
    sharded.cross_entropy_with_integer_labels(x, t[:3], mesh8)
  with pytest.raises(ValueError, match="reduction must be"):
    sharded.cross_entropy_with_integer_labels(x, t, mesh8, reduction="max")
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
  from softmax_jax._train import replicate
  from softmax_jax.train import init_state

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
