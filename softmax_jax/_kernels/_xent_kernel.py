r"""The fused integer-label cross-entropy kernel and its twin in XLA ops.

One program per row block writes the loss ``ξ = m + log s − z_t`` and the gradient
``∂ξ/∂z = y − t`` (lecture, "Derivative of the cross-entropy loss function for the
softmax function") in the same walk over the row's tiles, with class weights, label
smoothing, PaLM's z-loss and Gemma 2's soft-cap folded in.  The label entry
``−(1 − y_t)`` is taken from the tail (:func:`~softmax_jax._numerics.complement`).
:func:`xent_formula` computes the same values with XLA ops: it is what the kernel's
outputs are differentiated through (second order, forward mode over the gradient).
Every rule (label codes, row statistics, log-sum-exp, soft-cap, smoothing) comes
from :mod:`softmax_jax._numerics`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from softmax_jax import _numerics as nx
from softmax_jax._kernels import _tiling
from softmax_jax._kernels._tiling import MAX_TILE, ROW_ELEMS

F16_RANGE = 2.0**14  # the float16 gradient is stored scaled so that |entry| ≤ this

# ---------------------------------------------------------------------------
# The kernel
# ---------------------------------------------------------------------------


class _RowSums(NamedTuple):
  """What the first walk over a row's tiles accumulates (each ``[rows, 1]``)."""

  st: nx.RowStats
  z_t: jax.Array  # the label's (soft-capped) logit; 0 when the code is not a class
  w_t: jax.Array  # the label's weight; 0 when the code is not a class
  k: jax.Array  # smoothing: the number of valid classes K
  wsum: jax.Array  # smoothing: W = Σ_c w_c over the valid classes
  wz: jax.Array  # smoothing: Σ_c w_c z_c over the valid classes


def _xent_kernel(x_ref, t_ref, w_ref, g_ref, wmax_ref, loss_ref, grad_ref, aux_ref, *, tile,
                 tiles, c, eps, z_loss, softcap):
  """Per row (``t`` holds int32 label codes, :func:`~softmax_jax._numerics.canonical_labels`):
  ``ξ`` (PyTorch semantics with class weights and smoothing, plus ``λ_z lse²``), its
  gradient times ``g · r`` and ``aux = [−log y_t, counted, lse, r]``.  ``g`` is one number
  for every row (the cotangent the reduction is expected to hand each row); ``r`` is 1,
  or for a float16 gradient the power of two that puts the row's largest possible entry
  near :data:`F16_RANGE`, so that nothing a loss scale would later need underflows."""
  t = t_ref[...]  # [rows, 1] int32 codes
  g = g_ref[...]  # [1, 1]
  rows = t.shape[0]
  zero = jnp.zeros((rows, 1), jnp.float32)

  def tile_terms(cols, offset):
    raw, idx = _tiling.load(x_ref, cols, offset, c)
    z, th = nx.softcap(raw, softcap)
    w = w_ref[:, cols]  # [1, tile] float32
    return z, th, idx, w, jnp.where(z > -jnp.inf, w, 0.0)

  def gather(cols, offset, acc):
    z, _, idx, w, wv = tile_terms(cols, offset)
    hit = idx == t
    acc = acc._replace(st=nx.merge(acc.st, nx.part_stats(z)),
                       z_t=acc.z_t + jnp.sum(jnp.where(hit, z, 0.0), -1, keepdims=True),
                       w_t=acc.w_t + jnp.sum(jnp.where(hit, w, 0.0), -1, keepdims=True))
    if eps:
      acc = acc._replace(k=acc.k + nx.count_valid(z),
                         wsum=acc.wsum + jnp.sum(wv, -1, keepdims=True),
                         wz=acc.wz + jnp.sum(jnp.where(wv != 0, wv * z, 0.0), -1,
                                             keepdims=True))
    return acc

  init = _RowSums(nx.empty_stats((rows, 1)), zero, zero, zero, zero, zero)
  p = _tiling.for_tiles(tile, tiles, gather, init)
  st = nx.finalize(p.st)
  info = nx.label_info(t)
  sh_t = p.z_t - st.m  # z_t − m
  counted, bad = nx.label_status(nx.nonempty(st), info, sh_t)
  log_s = nx.log_normaliser(st)
  lse = st.m + log_s
  nll = log_s - sh_t  # −log y_t, accurate when t dominates
  coef_k = nx.smoothing_coef(eps, p.k) if eps else zero
  loss = (1 - eps) * p.w_t * nll + coef_k * (p.wsum * lse - p.wz)
  if z_loss:  # (lse² of a 1e30 row overflows float32: leave it out when λ_z = 0)
    loss = loss + z_loss * jnp.square(lse)
  loss_ref[...] = nx.finish(loss, counted, bad)

  # Second walk: ∂ℓ/∂z_c = ((1−ε) w_t + (ε/K) W + 2 λ_z lse) y_c − (1−ε) w_t [c = t] − (ε/K) w_c
  # (lecture: y − t, with the options folded in).
  hit_coef = (1 - eps) * p.w_t
  scale = hit_coef + coef_k * p.wsum + (2 * z_loss * lse if z_loss else 0.0)
  # the label entry: scale·y_t − hit = (scale − hit)·y_t − hit·(1 − y_t), with 1 − y_t
  # from the tail (logits [20, 0, −1] in float32: −2.8194e-9, not 0)
  label_entry = (scale - hit_coef) * jnp.exp(sh_t - log_s) - hit_coef * nx.complement(st, sh_t)
  if grad_ref.dtype == jnp.float16:
    bound = jnp.abs(scale) + jnp.abs(hit_coef) + coef_k * wmax_ref[...]
    r = jnp.exp2(jnp.floor(jnp.log2(F16_RANGE / jnp.maximum(bound, 2.0**-60))))
    r = jnp.where(counted & ~bad, jnp.clip(r, 2.0**-24, 2.0**60), 1.0)
  else:
    r = jnp.ones((rows, 1), jnp.float32)
  mult = g * r
  aux_ref[:, 0:1] = jnp.where(counted, nll, 0.0)
  aux_ref[:, 1:2] = counted.astype(jnp.float32)
  aux_ref[:, 2:3] = lse
  aux_ref[:, 3:4] = r

  def write(cols, offset, acc):
    z, th, idx, _, wv = tile_terms(cols, offset)
    # y = e^{(z − m) − log s}: m and log s apart, so a 1e30 row keeps log s
    grad = jnp.where(idx == t, label_entry, scale * jnp.exp((z - st.m) - log_s))
    if eps:
      grad = grad - coef_k * wv
    if th is not None:
      grad = grad * (1 - jnp.square(th))
    grad = jnp.where(counted, mult * grad, 0.0)
    grad_ref[:, cols] = jnp.where(bad, jnp.nan, grad).astype(grad_ref.dtype)
    return acc

  _tiling.for_tiles(tile, tiles, write, 0)


class KernelOutputs(NamedTuple):
  """What the kernel returns for ``N`` rows."""

  loss: jax.Array  # [N]: NaN for a bad row, 0 for a row that does not count
  grad: jax.Array  # [N, C], the logits' dtype: row_scale · g · ∂ℓ/∂z
  nll: jax.Array  # [N]: −log y_t on counted rows, else 0
  counted: jax.Array  # [N]: 1.0 where the row counts
  lse: jax.Array  # [N]
  row_scale: jax.Array  # [N]: 1, or float16's storage scale (a power of two)


@functools.partial(jax.jit, static_argnames=("interpret", "max_tile", "row_elems", "eps",
                                             "z_loss", "softcap", "donate"))
def xent_2d(x: jax.Array, codes: jax.Array, weights: jax.Array | None = None, *,
            eps: float = 0.0, z_loss: float = 0.0, softcap: float | None = None,
            donate: bool = False, grad_scale: jax.Array | float = 1.0,
            interpret: bool | None = None, max_tile: int = MAX_TILE,
            row_elems: int = ROW_ELEMS) -> KernelOutputs:
  """The loss of ``[N, C]`` logits, its gradient and what the derivatives need, in one kernel.

  ``codes`` are int32 label codes (:func:`~softmax_jax._numerics.canonical_labels`: the
  class, IGNORED or INVALID), so the kernel knows nothing of ``ignore_index`` or the
  labels' dtype.  ``grad`` is the per-row loss's gradient times ``grad_scale`` (a scalar:
  the cotangent every row is expected to get) times ``row_scale`` (1, except for float16,
  see :func:`_xent_kernel`).

  ``donate=True`` aliases the gradient output to the logits input
  (``input_output_aliases``): each program reads a tile of its rows before it
  writes the same tile, so the gradient may overwrite the logits in place.  XLA
  honours the alias when nothing reads the logits afterwards and inserts a copy
  otherwise, so the result is the same either way."""
  n, c = x.shape
  b = _tiling.blocks(n, c, max_tile, row_elems)
  w = jnp.ones((c,), jnp.float32) if weights is None else weights.astype(jnp.float32)
  wmax = jnp.max(jnp.abs(w)).reshape(1, 1)
  outs = (jax.ShapeDtypeStruct((n, 1), jnp.float32), jax.ShapeDtypeStruct((n, c), x.dtype),
          jax.ShapeDtypeStruct((n, 4), jnp.float32))
  kernel = functools.partial(_xent_kernel, eps=eps, z_loss=z_loss, softcap=softcap)
  scalar = pl.BlockSpec((1, 1), lambda i: (0, 0))
  loss, grad, aux = _tiling.call(
      kernel, x, outs, b, interpret=interpret,
      extra_in=(codes.astype(jnp.int32).reshape(n, 1), w[None],
                jnp.asarray(grad_scale, jnp.float32).reshape(1, 1), wmax),
      extra_specs=(pl.BlockSpec((b.rows, 1), lambda i: (i, 0)),
                   pl.BlockSpec((1, b.width), lambda i: (0, 0)), scalar, scalar),
      aliases={0: 1} if donate else None)
  return KernelOutputs(loss[:, 0], grad, aux[:, 0], aux[:, 1], aux[:, 2], aux[:, 3])


class FormulaOutputs(NamedTuple):
  loss: jax.Array  # [N]
  grad: jax.Array  # [N, C] ∂ℓ/∂z (float32 for half precision)
  nll: jax.Array  # [N]: −log y_t on counted rows, else 0
  lse: jax.Array  # [N]


def xent_formula(x, codes, weights, *, eps=0.0, z_loss=0.0, softcap=None) -> FormulaOutputs:
  """The kernel's loss and ``∂ℓ/∂z`` written with XLA ops and the same core rules: the
  derivative of the kernel (second order, forward mode) and a reference for the tests."""
  z, th = nx.softcap(nx.upcast(x), softcap)
  st = nx.row_stats(z)
  log_s = nx.log_normaliser(st)
  lse = st.m + log_s
  info = nx.label_info(codes[:, None])
  valid = z != -jnp.inf
  zs = jnp.where(valid, z, 0.0)
  sh_t = jnp.take_along_axis(z, info.index, -1) - st.m
  w = jnp.ones(z.shape[-1:], z.dtype) if weights is None else nx.upcast(weights)
  w_t = w[info.index]
  wv = jnp.where(valid, w, 0.0)
  counted, bad = nx.label_status(nx.nonempty(st), info, sh_t)
  nll = log_s - sh_t
  hit = (1 - eps) * w_t
  scale = hit + 2 * z_loss * lse
  loss = hit * nll + z_loss * jnp.square(lse)
  if eps:
    coef = nx.smoothing_coef(eps, nx.count_valid(z))
    loss = loss + coef * jnp.sum(wv * (log_s - (zs - st.m)), -1, keepdims=True)
    scale = scale + coef * jnp.sum(wv, -1, keepdims=True)
  # ∂ξ/∂z = y − t (lecture, "Derivative of the cross-entropy loss function for the softmax
  # function"), the options folded in as in the kernel's second walk
  is_t = lax.broadcasted_iota(jnp.int32, z.shape, 1) == info.index
  label_entry = (scale - hit) * jnp.exp(sh_t - log_s) - hit * nx.complement(st, sh_t)
  grad = jnp.where(is_t, label_entry, scale * jnp.exp(jnp.where(valid, z, -jnp.inf) - lse))
  if eps:
    grad = grad - coef * wv
  if th is not None:
    grad = grad * (1 - jnp.square(th))
  grad = nx.finish(grad, counted, bad)
  return FormulaOutputs(nx.finish(loss, counted, bad)[:, 0], grad,
                        jnp.where(counted, nll, 0.0)[:, 0], lse[:, 0])
