"""The softmax / log-softmax kernel (``_kernels._softmax``), in interpret mode on the CPU,
against the XLA path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softmax_jax as sj
from softmax_jax._kernels import _softmax


@pytest.mark.parametrize("c,max_tile", [(10, 16384), (1000, 16384), (4096, 512), (3072, 1024)])
@pytest.mark.parametrize("log", [False, True])
def test_one_and_many_tiles(masked_logits, c, max_tile, log):
  x = masked_logits((13, c))
  got = _softmax.softmax_2d(x, log=log, max_tile=max_tile)
  want = (sj.log_softmax if log else sj.softmax)(x, impl="xla")
  np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
  np.testing.assert_allclose(jnp.where(jnp.isfinite(want), got, 0),
                             jnp.where(jnp.isfinite(want), want, 0), rtol=2e-6, atol=2e-7)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 2e-6), (jnp.bfloat16, 1e-2)])
@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_public_functions_with_impl_pallas(rng, dtype, tol, fn):
  """Values and the JVP rule's gradient (``ẏ = y ⊙ (ż − ⟨y, ż⟩)``) against the XLA path."""
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
