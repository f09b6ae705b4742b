"""Class-sharded ``softmax`` and ``log_softmax`` (``sharded._softmax``) against the
single-device functions."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import softmax_jax as sj
from softmax_jax import sharded

FAMILY = [(sharded.softmax, sj.softmax), (sharded.log_softmax, sj.log_softmax)]


@pytest.mark.x64
@pytest.mark.parametrize("classes", [32, 13, 5])  # divisible, uneven, fewer than devices
@pytest.mark.parametrize("fn,ref", FAMILY)
def test_equals_single_device(mesh8, rng, classes, fn, ref):
  x = jnp.asarray(rng.normal(size=(6, classes)) * 5)
  np.testing.assert_allclose(fn(x, mesh8), ref(x), rtol=1e-14, atol=1e-14)
  v = jnp.asarray(rng.normal(size=x.shape))
  got = jax.jit(jax.grad(lambda z: jnp.sum(fn(z, mesh8) * v)))(x)
  want = jax.grad(lambda z: jnp.sum(ref(z) * v))(x)
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.x64
@pytest.mark.parametrize("fn,ref", FAMILY)
def test_empty_rows_and_where(mesh8, rng, fn, ref):
  # row 1 is all −inf, row 2 is masked out by where, row 3 has one valid class
  x = jnp.asarray(rng.normal(size=(4, 13))).at[1].set(-jnp.inf)
  where = jnp.asarray(rng.random((4, 13)) > 0.3).at[2].set(False).at[3].set(False)
  where = where.at[3, 7].set(True)
  got, want = fn(x, mesh8, where=where), ref(x, where=where)
  chex.assert_trees_all_close(got, want, rtol=1e-12, atol=1e-15)
  assert not np.isnan(np.asarray(got)).any()
  np.testing.assert_array_equal(fn(x, mesh8)[1], 0.0 if fn is sharded.softmax else -np.inf)
  v = jnp.asarray(rng.normal(size=x.shape))
  masked_sum = lambda y: jnp.sum(jnp.where(jnp.isfinite(y), y, 0) * v)  # noqa: E731
  g = jax.jit(jax.grad(lambda z: masked_sum(fn(z, mesh8, where=where))))(x)
  assert np.isfinite(np.asarray(g)).all()
  chex.assert_trees_all_close(g, jax.grad(lambda z: masked_sum(ref(z, where=where)))(x),
                              rtol=1e-12, atol=1e-15)
  np.testing.assert_array_equal(g[1:3], 0.0)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-6), (jnp.bfloat16, 1e-2)])
def test_float32_and_bfloat16(mesh8, rng, dtype, tol):
  """The default user configuration (x64 off): float32 and bfloat16 to their rounding."""
  x = jnp.asarray(rng.normal(size=(8, 24)) * 3).astype(dtype)
  for fn, ref in FAMILY:
    got = fn(x, mesh8)
    assert got.dtype == dtype
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(ref(x), np.float32),
                               rtol=tol, atol=tol / 10)


@pytest.mark.x64
def test_local_functions_inside_a_user_shard_map(mesh2x4, rng):
  x = jnp.asarray(rng.normal(size=(8, 24)) * 3)

  def body(z):
    return (sharded.softmax_local(z, axis_name="model"),
            sharded.log_softmax_local(z, axis_name="model"))

  f = jax.jit(jax.shard_map(body, mesh=mesh2x4, in_specs=P("data", "model"),
                            out_specs=(P("data", "model"), P("data", "model"))))
  y, logy = f(x)
  np.testing.assert_allclose(y, sj.softmax(x), rtol=1e-14, atol=1e-15)
  np.testing.assert_allclose(logy, sj.log_softmax(x), rtol=1e-14, atol=1e-14)
  np.testing.assert_allclose(sharded.softmax(x, mesh2x4, batch_axis="data"), sj.softmax(x),
                             rtol=1e-14)
  with pytest.raises(ValueError, match="axis_name='model' is not bound; call this function "
                                       "inside jax.shard_map"):
    sharded.softmax_local(x, axis_name="model")


def test_errors(mesh8, mesh2x4, rng):
  x = jnp.asarray(rng.normal(size=(6, 16)), jnp.float32)
  with pytest.raises(ValueError, match="axis_name='vocab' is not an axis of the mesh"):
    sharded.softmax(x, mesh8, axis_name="vocab")
  with pytest.raises(ValueError, match="batch size 5 is not divisible by the 2 devices"):
    sharded.softmax(x[:5], mesh2x4, batch_axis="data")
  with pytest.raises(ValueError, match=r"expected float logits of shape \[batch, classes\]"):
    sharded.log_softmax(x[0], mesh8)
  explicit = jax.make_mesh((8,), ("model",), axis_types=(jax.sharding.AxisType.Explicit,))
  with pytest.raises(ValueError, match="Explicit axes"):
    sharded.softmax(x, explicit)
  with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
    sharded.softmax(x, "model")
