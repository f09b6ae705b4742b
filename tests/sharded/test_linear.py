"""Class-sharded ``linear_cross_entropy`` (``sharded._linear``) against the single-device
loss of ``hidden @ weight + bias``."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softmax_jax as sj
from softmax_jax import sharded

pytestmark = pytest.mark.x64


def test_value_and_gradients(mesh8, mesh2x4, rng):
  h = jnp.asarray(rng.normal(size=(8, 5)))
  w = jnp.asarray(rng.normal(size=(5, 32)))
  b = jnp.asarray(rng.normal(size=32))
  t = jnp.asarray(rng.integers(0, 32, 8))
  ref = lambda h, w, b: sj.cross_entropy_with_integer_labels(h @ w + b, t)  # noqa: E731
  for mesh, batch_axis in ((mesh8, None), (mesh2x4, "data")):
    f = lambda h, w, b, mesh=mesh, ax=batch_axis: sharded.linear_cross_entropy(  # noqa: E731
        h, w, t, mesh, bias=b, batch_axis=ax)
    (got, grad), (want, want_grad) = (jax.jit(jax.value_and_grad(k, (0, 1, 2)))(h, w, b)
                                      for k in (f, ref))
    np.testing.assert_allclose(got, want, rtol=1e-14)
    chex.assert_trees_all_close(grad, want_grad, rtol=1e-12, atol=1e-15)


def test_options(mesh2x4, rng):
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
    chex.assert_trees_all_close(got, want, rtol=1e-13)  # label 32 is out of range: NaN
  ok = t.at[5].set(1)
  f = lambda h, w, cw: sharded.linear_cross_entropy(h, w, ok, mesh2x4, batch_axis="data",  # noqa: E731
                                                    class_weights=cw, **kw)
  g = lambda h, w, cw: sj.cross_entropy_with_integer_labels(h @ w, ok, class_weights=cw, **kw)  # noqa: E731
  (got, grad), (want, want_grad) = (jax.jit(jax.value_and_grad(k, (0, 1, 2)))(h, w, cw)
                                    for k in (f, g))
  chex.assert_trees_all_close(got, want, rtol=1e-13)
  chex.assert_trees_all_close(grad, want_grad, rtol=1e-12, atol=1e-14)
  jvp = jax.jit(lambda k, h: jax.jvp(lambda h: k(h, w, cw), (h,), (h,)), static_argnums=0)
  chex.assert_trees_all_close(jvp(f, h), jvp(g, h), rtol=1e-12, atol=1e-14)


def test_errors(mesh8, rng):
  h = jnp.asarray(rng.normal(size=(8, 5)))
  w = jnp.asarray(rng.normal(size=(5, 32)))
  t = jnp.zeros(8, jnp.int32)
  with pytest.raises(ValueError, match="30 classes do not split evenly over the 8 devices"):
    sharded.linear_cross_entropy(h, w[:, :30], t, mesh8)
  with pytest.raises(ValueError, match=r"weight has shape \(4, 32\) but hidden has shape"):
    sharded.linear_cross_entropy(h, w[:4], t, mesh8)
  with pytest.raises(ValueError, match=r"bias has shape \(3,\), expected \(32,\)"):
    sharded.linear_cross_entropy(h, w, t, mesh8, bias=jnp.ones(3))
