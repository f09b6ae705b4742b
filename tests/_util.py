"""Small helpers shared by the tests."""

from __future__ import annotations

import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softmax_jax.verify._tolerances import tolerance

DTYPES = [jnp.float64, jnp.float32, jnp.bfloat16, jnp.float16]

# Each public function must give the same answer under these wrappers.
TRANSFORMS = {"eager": lambda f: f, "jit": jax.jit}

# SOFTMAX_JAX_FULL_MATRIX=1 runs every combination of a parametrized matrix; by default
# a covering sample runs (see :func:`matrix`), as in tests/test_conformance.py.
FULL_MATRIX = os.environ.get("SOFTMAX_JAX_FULL_MATRIX", "") == "1"


def matrix(*dims):
  """Parameter tuples over ``dims``: the full product under SOFTMAX_JAX_FULL_MATRIX=1, else
  ``max(len(d))`` tuples that take every value of every dimension at least once (the
  ``i``-th tuple takes entry ``i mod len(d)`` of each).  A tuple holding ``jnp.float64``
  is marked ``x64`` (it needs 64-bit JAX); the others run with x64 off."""
  if FULL_MATRIX:
    rows = list(itertools.product(*dims))
  else:
    rows = [tuple(d[i % len(d)] for d in dims) for i in range(max(len(d) for d in dims))]
  return [pytest.param(*r, marks=pytest.mark.x64) if any(v is jnp.float64 for v in r) else r
          for r in rows]


def logits(rng, shape, dtype=jnp.float32, scale=3.0):
  """Random logits as ``dtype``; references are computed from the rounded values."""
  return jnp.asarray(rng.normal(size=shape) * scale).astype(dtype)


def f64(x):
  """``x`` as a float64 NumPy array (exact for every float dtype, with x64 on or off)."""
  return np.asarray(x).astype(np.float64)


def assert_close(got, ref, dtype, scale=1.0):
  """``|got − ref| ≤ (atol + rtol·|ref|)·scale`` with the package's dtype tolerance."""
  rtol, atol = tolerance(dtype)
  np.testing.assert_allclose(f64(got), np.asarray(ref, np.float64), rtol=rtol * scale,
                             atol=atol * scale)
