"""Small helpers shared by the tests."""

from __future__ import annotations

import gzip
import itertools
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.custom_batching import custom_vmap

import softmax_jax as sj
from softmax_jax import linear_cross_entropy
from softmax_jax.cli import main
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


# --- linear_cross_entropy ---------------------------------------------------------

def jitted_linear_cross_entropy():
  """``linear_cross_entropy`` under one ``jax.jit`` with its options static: a
  transformation of it (``jax.hessian``...) then runs as one compiled program rather
  than op by op.  Argument errors and host (NumPy) labels are tested on the plain
  function."""
  return jax.jit(linear_cross_entropy, static_argnames=(
      "chunk_size", "ignore_index", "label_smoothing", "z_loss", "logit_softcap", "reduction",
      "return_lse"))


def linear_problem(rng, n=37, hdim=6, v=29):
  """Hidden states ``[n, hdim]``, weight ``[hdim, v]``, bias ``[v]`` and labels ``[n]``."""
  h = jnp.asarray(rng.normal(size=(n, hdim)))
  w = jnp.asarray(rng.normal(size=(hdim, v)))
  b = jnp.asarray(rng.normal(size=v))
  t = jnp.asarray(rng.integers(0, v, n))
  return h, w, b, t


# --- second derivatives -------------------------------------------------------------

def assert_hessian_is_softmax_jacobian(loss, z, v):
  """The Hessian of a one-hot cross-entropy ``loss`` at ``z`` is the softmax Jacobian
  ``diag(y) − y yᵀ``, by ``jax.hessian``, reverse-over-reverse, forward-over-forward and a
  forward-over-reverse product with ``v``."""
  jac = sj.softmax_jacobian(z)

  @jax.jit
  def second_derivatives(z):
    _, hvp = jax.jvp(jax.grad(loss), (z,), (v,))  # forward-over-reverse
    return (jax.hessian(loss)(z), jax.jacrev(jax.jacrev(loss))(z),
            jax.jacfwd(jax.jacfwd(loss))(z), hvp)

  hess, rev_rev, fwd_fwd, hvp = second_derivatives(z)
  chex.assert_trees_all_close((hess, rev_rev, fwd_fwd), (jac, jac, jac), rtol=1e-12,
                              atol=1e-15)
  np.testing.assert_allclose(hvp, jac @ v, rtol=1e-12, atol=1e-15)


def assert_finite_derivatives(f, z):
  """``jax.grad``, ``jax.jacfwd`` and ``jax.hessian`` of ``f`` at ``z`` have no NaN."""
  for d in (jax.grad, jax.jacfwd, jax.hessian):
    assert not np.any(np.isnan(d(f)(z))), d


def logits_with_an_empty_row(how: str):
  """Three float64 rows of three logits, the middle one without a valid class: its
  entries ``−inf`` (``how="neg_inf"``, mask ``None``) or masked (``how="where"``)."""
  z = jnp.array([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [3.0, 1.0, 1.0]], jnp.float64)
  where = jnp.array([[True] * 3, [False] * 3, [True] * 3])
  if how == "neg_inf":
    return jnp.where(where, z, -jnp.inf), None
  return z, where


# --- the command line ---------------------------------------------------------------

def cli_exit_code(argv) -> int:
  """``softmax_jax.cli.main``'s exit status, also when argparse exits."""
  try:
    return main(argv)
  except SystemExit as e:
    return e.code


def one_line_error(capsys) -> str:
  """The captured stderr, asserted to be one line and no traceback."""
  err = capsys.readouterr().err
  assert "Traceback" not in err and err.count("\n") == 1, err
  return err


# --- data files ---------------------------------------------------------------------

IRIS_CLASSES = ("setosa", "versicolor", "virginica")
IRIS_FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def write_data_file(tmp_path, text: str, name: str = "data.csv"):
  """``text`` written to ``tmp_path / name`` (gzip-compressed when the name ends .gz)."""
  path = tmp_path / name
  if name.endswith(".gz"):
    path.write_bytes(gzip.compress(text.encode()))
  else:
    path.write_text(text)
  return path


# Planted faults shared by the tests of softmax_jax.verify

def row_dot(factor, *, only_when_one_is_unbatched=False):
  """``Σ_i a_i b_i`` over the last axis, with a batching rule off by ``factor`` (only when
  one operand is unbatched, with ``only_when_one_is_unbatched``)."""
  @custom_vmap
  def dot(a, b):
    return jnp.sum(a * b, -1)

  @dot.def_vmap
  def _rule(axis_size, in_batched, a, b):
    a, b = (v if batched else jnp.broadcast_to(v, (axis_size, *v.shape))
            for v, batched in zip((a, b), in_batched, strict=True))
    wrong = not all(in_batched) or not only_when_one_is_unbatched
    return (factor if wrong else 1.0) * jnp.sum(a * b, -1), True

  return dot


def squared_norm_jvp_batched_wrong(factor, **options):
  """``Σ x²`` with a custom_jvp rule whose batched form is off by ``factor``."""
  dot = row_dot(factor, **options)

  @jax.custom_jvp
  def squared_norm(x):
    return jnp.sum(x ** 2, -1)

  @squared_norm.defjvp
  def _jvp(primals, tangents):
    (x,), (v,) = primals, tangents
    return squared_norm(x), dot(2 * x, v)  # d Σx² = 2⟨x, v⟩

  return squared_norm
