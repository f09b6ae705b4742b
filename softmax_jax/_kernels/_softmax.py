r"""The softmax / log-softmax kernel: ``y = e^{z − m} / s`` in one program per row block.

The first walk over a row's tiles gathers its
:class:`~softmax_jax._numerics.RowStats` (:func:`~softmax_jax._kernels._tiling.row_stats`),
the second writes ``y`` (or ``log y = (z − m) − log s``).  A row with every class
``−inf`` gives zeros (``−inf`` for the log).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from softmax_jax import _numerics as nx
from softmax_jax._kernels import _tiling
from softmax_jax._kernels._tiling import MAX_TILE, ROW_ELEMS


def _softmax_kernel(x_ref, o_ref, *, tile, tiles, c, log):
  st = _tiling.row_stats(x_ref, tile, tiles, c)
  empty = ~nx.nonempty(st)  # every class masked with −inf
  log_s = nx.log_normaliser(st)

  def write(cols, offset, acc):
    z = _tiling.load(x_ref, cols, offset, c).z - st.m
    if log:
      out = jnp.where(empty, -jnp.inf, z - log_s)
    else:
      out = jnp.exp(z) / jnp.where(empty, 1.0, st.s)
    o_ref[:, cols] = out.astype(o_ref.dtype)
    return acc

  _tiling.for_tiles(tile, tiles, write, 0)


@functools.partial(jax.jit, static_argnames=("log", "interpret", "max_tile", "row_elems"))
def softmax_2d(x: jax.Array, *, log: bool = False, interpret: bool | None = None,
               max_tile: int = MAX_TILE, row_elems: int = ROW_ELEMS) -> jax.Array:
  """``softmax`` (or ``log_softmax``) of ``[N, C]`` over the last axis with one kernel."""
  b = _tiling.blocks(*x.shape, max_tile, row_elems)
  return _tiling.call(functools.partial(_softmax_kernel, log=log), x,
                      (jax.ShapeDtypeStruct(x.shape, x.dtype),), b, interpret=interpret)


def softmax(x, log, *, max_tile: int = MAX_TILE, row_elems: int = ROW_ELEMS,
            interpret: bool | None = None):
  """``softmax`` / ``log_softmax`` over the last axis of ``x`` (any leading shape) with the
  kernel; differentiable by the rule below (forward and reverse mode, any order)."""
  return _softmax(x, log, max_tile, row_elems, interpret)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3, 4))
def _softmax(x, log, max_tile, row_elems, interpret):
  return softmax_2d(x.reshape(-1, x.shape[-1]), log=log, max_tile=max_tile,
                    row_elems=row_elems, interpret=interpret).reshape(x.shape)


@_softmax.defjvp
def _softmax_jvp(log, max_tile, row_elems, interpret, primals, tangents):
  # ∂y_i/∂z_j = y_i(δ_ij − y_j) (lecture, "Derivative of the softmax function"), so
  # ẏ = y ⊙ (ż − ⟨y, ż⟩) and d log y = ż − ⟨y, ż⟩, with y from the kernel's output.
  (x,), (dx,) = primals, tangents
  out = _softmax(x, log, max_tile, row_elems, interpret)
  y = (jnp.exp(out) if log else out).astype(jnp.float32)
  inner = jnp.sum(y * dx.astype(jnp.float32), axis=-1, keepdims=True)
  if log:
    return out, (dx.astype(jnp.float32) - inner).astype(out.dtype)
  return out, (y * (dx.astype(jnp.float32) - inner)).astype(out.dtype)
