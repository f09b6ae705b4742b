"""Small helpers shared by the tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from softmax_jax.verify._tolerances import tolerance

DTYPES = [jnp.float64, jnp.float32, jnp.bfloat16, jnp.float16]

# Each public function must give the same answer under these wrappers.
TRANSFORMS = {"eager": lambda f: f, "jit": jax.jit}


def logits(rng, shape, dtype=jnp.float32, scale=3.0):
  """Random logits as ``dtype``; references are computed from the rounded values."""
  return jnp.asarray(rng.normal(size=shape) * scale).astype(dtype)


def f64(x):
  return np.asarray(jnp.asarray(x, jnp.float64))


def assert_close(got, ref, dtype, scale=1.0):
  """``|got − ref| ≤ (atol + rtol·|ref|)·scale`` with the package's dtype tolerance."""
  rtol, atol = tolerance(dtype)
  np.testing.assert_allclose(f64(got), np.asarray(ref, np.float64), rtol=rtol * scale,
                             atol=atol * scale)
