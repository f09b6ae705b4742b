r"""The vocabulary walked in chunks: the loops behind ``linear_cross_entropy``.

Per chunk of ``chunk`` columns, ``z = h W[:, c] + b[c]`` (``[N, chunk]``):

- the statistics pass (:func:`_statistics_pass`) merges the chunk's
  :class:`~softmax_jax._numerics.RowStats` into the running ones (online softmax) and
  picks the label's logit; with smoothing it counts the valid classes and sums them;
- the derivative (:func:`_chunked_tangents`) is again a loop over chunks,
  ``ℓ̇ = Σ_c (∂ℓ/∂z_c) ż_c`` with ``ż = ḣ W + h Ẇ + ḃ`` and the lecture's
  ``∂ξ/∂z = y − t`` with the options folded in (:func:`_chunk_jacobian`), under
  ``jax.checkpoint`` so that its transpose (reverse mode) recomputes each chunk.

The formulas are in ``softmax_jax/losses/_linear.py``, which checks the arguments and
calls :func:`linear_xent`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

from softmax_jax import _numerics as nm


class Config(NamedTuple):
  """The static options (hashable: a ``nondiff_argnums`` of the custom JVP)."""

  chunk: int
  eps: float
  z_loss: float
  cap: float | None
  with_lse: bool  # whether the lse output is used (its tangent is computed)


class _Rows(NamedTuple):
  """What the statistics pass keeps per row (``[N, 1]`` each): ``O(N)``; also its loop carry."""

  st: nm.RowStats  # merged (m, s, tail) of the soft-capped logits, finalised
  z_t: jax.Array  # the label's logit (0 where the label is not a class)
  k: jax.Array  # K, the number of valid classes
  z_sum: jax.Array  # Σ of the valid logits (0 without smoothing)


class _Coefs(NamedTuple):
  """Per-row factors of ``∂ℓ/∂z`` (``[N, 1]``), derived from :class:`_Rows`."""

  m: jax.Array  # the row max (a constant)
  log_s: jax.Array  # log s
  lse: jax.Array
  one_minus_y_t: jax.Array  # 1 − y_t, from the tail
  counted: jax.Array  # 1.0 on counted rows, else 0.0
  bad: jax.Array  # counted rows with a bad label: NaN derivatives
  smooth: jax.Array  # ε / K (0 without smoothing)


class _RowLoss(NamedTuple):
  """The per-row results (``[N]``) and the coefficients of their derivative."""

  loss: jax.Array
  lse: jax.Array  # 0 on rows that do not count
  counted: jax.Array  # bool
  coefs: _Coefs


class Outputs(NamedTuple):
  """What the custom-JVP function returns (``[N]`` each)."""

  loss: jax.Array
  lse: jax.Array
  counted: jax.Array  # bool (its tangent is float0)


class _LossAndLse(NamedTuple):
  """A pair of ``[N, chunk]`` derivatives or ``[N]`` tangents: of the loss, of the lse."""

  loss: jax.Array
  lse: jax.Array


def _accumulation_dtype(w):
  """float32 for half-precision weights (products accumulate in it), else their dtype."""
  return jnp.promote_types(w.dtype, jnp.float32)


def _chunk_logits(h, w, b, cap) -> nm.Softcapped:
  """The soft-capped logits ``h w + b`` of one vocabulary chunk, in float32 (or float64)."""
  acc = _accumulation_dtype(w)
  z = jnp.dot(h, w, preferred_element_type=acc)
  if b is not None:
    z = z + b.astype(acc)
  return nm.softcap(z, cap)


def _over_vocab(w, b, chunk, fn, carry):
  """``carry = fn(w_chunk, b_chunk, offset, carry)`` over the vocabulary in chunks.

  Whole chunks are read with ``dynamic_slice`` inside a loop (no copy of
  ``w``); a remainder narrower than ``chunk`` is handled once after it.
  """
  full, rest = divmod(w.shape[1], chunk)

  def body(j, carry):
    start = j * chunk
    w_j = lax.dynamic_slice_in_dim(w, start, chunk, axis=1)
    b_j = None if b is None else lax.dynamic_slice_in_dim(b, start, chunk)
    return fn(w_j, b_j, start, carry)

  carry = lax.fori_loop(0, full, body, carry)
  if rest:
    start = full * chunk
    carry = fn(w[:, start:], None if b is None else b[start:], start, carry)
  return carry


def _statistics_pass(h, w, b, code, cfg: Config) -> _Rows:
  """The statistics pass: one matrix product per chunk, nothing wider than a chunk kept."""
  n = h.shape[0]
  acc = _accumulation_dtype(w)
  index = nm.label_info(code).index[:, None]

  def step(w_j, b_j, start, rows: _Rows) -> _Rows:
    z, _ = _chunk_logits(h, w_j, b_j, cfg.cap)  # [N, chunk]
    st = nm.merge(rows.st, nm.part_stats(z))
    local = index - start
    mine = (local >= 0) & (local < z.shape[1])
    picked = jnp.take_along_axis(z, jnp.clip(local, 0, z.shape[1] - 1), axis=-1)
    rows = rows._replace(st=st, z_t=jnp.where(mine, picked, rows.z_t))
    if cfg.eps:
      rows = rows._replace(
          k=rows.k + nm.count_valid(z),
          z_sum=rows.z_sum + jnp.sum(jnp.where(z != -jnp.inf, z, 0), axis=-1, keepdims=True))
    return rows

  zeros = jnp.zeros((n, 1), acc)
  rows = _over_vocab(w, b, cfg.chunk, step,
                     _Rows(nm.empty_stats((n, 1), acc), zeros, zeros, zeros))
  return rows._replace(st=nm.finalize(rows.st))


def _row_loss(rows: _Rows, code, cfg: Config) -> _RowLoss:
  """The loss, lse and counted rows, and the coefficients of ``∂ℓ/∂z``, from the row
  statistics."""
  info = nm.label_info(code)
  st = rows.st
  log_s = nm.log_normaliser(st)  # differentiated as log s
  lse = st.m + log_s
  shifted_t = rows.z_t - st.m
  comp = nm.complement(st, shifted_t)  # differentiated as 1 − e^{z_t − m}/s
  loss = (1 - cfg.eps) * (log_s - shifted_t)  # −log y_t
  coef = jnp.zeros_like(lse)
  if cfg.eps:  # (ε/K) Σ_valid (lse − z_c)
    coef = nm.smoothing_coef(cfg.eps, rows.k)
    loss = loss + jnp.where(rows.k > 0, cfg.eps * lse - coef * rows.z_sum, 0)
  if cfg.z_loss:
    loss = loss + cfg.z_loss * jnp.square(lse)
  counted, bad = nm.label_status(nm.nonempty(st)[:, 0], info, shifted_t[:, 0])
  loss = nm.finish(loss[:, 0], counted, bad)
  ones = jnp.ones_like(lse)
  counted_f = jnp.where(counted[:, None], ones, 0)
  lse_out = jnp.where(counted, lse[:, 0], 0)
  return _RowLoss(loss, lse_out, counted,
                  _Coefs(st.m, log_s, lse, comp, counted_f, bad[:, None], coef))


def _chunk_jacobian(h, w_j, b_j, start, index, c: _Coefs, cfg: Config) -> _LossAndLse:
  """``∂ℓ/∂z_c`` and ``∂lse/∂z_c`` of one chunk of raw logits (``[N, chunk]`` each).

  ``(1 + 2λ_z lse) y − (1 − ε) t − (ε/K)[valid]`` (lecture: ``y − t``, the options folded
  in), the label's entry written with ``1 − y_t``; times ``1 − tanh²`` under a soft-cap."""
  z, th = _chunk_logits(h, w_j, b_j, cfg.cap)
  y = jnp.exp((z - c.m) - c.log_s)
  a = 1 + 2 * cfg.z_loss * c.lse
  d_loss = a * y
  if cfg.eps:
    d_loss = d_loss - jnp.where(z != -jnp.inf, c.smooth, 0)
  keep = 1 - cfg.eps
  # (a y_t − (1 − ε)) without cancelling
  label = -keep * c.one_minus_y_t + (a - keep) * y - c.smooth
  is_t = lax.broadcasted_iota(jnp.int32, z.shape, 1) + start == index
  # NaN as a factor (the core's rule, as in finish): a bad row's second derivatives are
  # NaN too, while the other rows' derivatives along its inputs stay 0.
  nan_factor = jnp.where(c.bad, jnp.nan, 1).astype(d_loss.dtype)
  d_loss = c.counted * jnp.where(is_t, label, d_loss) * nan_factor
  d_lse = c.counted * y
  if th is not None:
    chain = 1 - jnp.square(th)
    d_loss, d_lse = d_loss * chain, d_lse * chain
  return _LossAndLse(d_loss, d_lse)


def _is_symbolic_zero(t):
  return t is None or isinstance(t, SymbolicZero)


def _chunked_tangents(h, w, b, code, c: _Coefs, cfg: Config, dh, dw, db) -> _LossAndLse:
  """``ℓ̇`` and ``lsė`` (``[N]``): ``Σ_c (∂/∂z_c) ż_c`` over the chunks, ``ż = ḣ W + h Ẇ + ḃ``.

  Linear in the tangents; the Jacobian of a chunk is under ``jax.checkpoint`` and
  reads ``W`` itself, so the transpose (reverse mode) recomputes it chunk by
  chunk instead of saving ``[N, V]`` residuals."""
  n, hdim = h.shape
  v, chunk = w.shape[1], cfg.chunk
  full, rest = divmod(v, chunk)
  acc = _accumulation_dtype(w)
  index = nm.label_info(code).index[:, None]
  dh, dw, db = (None if _is_symbolic_zero(t) else t for t in (dh, dw, db))
  dh = None if dh is None else dh.astype(acc)  # outside the loop: d h is summed in float32
  outputs = 2 if cfg.with_lse else 1

  @functools.partial(jax.checkpoint, static_argnums=(1,))
  def contract(start, width, dh, dw, db):
    # Linear in (dh, dw, db); under jax.checkpoint the chunk's Jacobian is
    # recomputed by the transpose, so reverse mode keeps no [N, chunk] residual.
    # The tangents are sliced like W: transposed, each chunk's d W is added in place.
    def cols(x, axis):
      if x is None:
        return None
      if width == chunk:
        return lax.dynamic_slice_in_dim(x, start, width, axis=axis)
      return lax.slice_in_dim(x, v - width, v, axis=axis)  # the remainder: the last columns

    w_j, b_j, dw_j, db_j = cols(w, 1), cols(b, 0), cols(dw, 1), cols(db, 0)
    jac = _chunk_jacobian(h, w_j, b_j, start, index, c, cfg)[:outputs]
    out = jnp.zeros((outputs, n), acc)
    zdot = jnp.zeros((n, width), acc)
    if dh is not None and w.dtype == acc:  # (transposed: d h += dz W_cᵀ)
      zdot = zdot + jnp.dot(dh, w_j)
    elif dh is not None:
      # Half precision: Σ_k ḣ_ik (J W_cᵀ)_ik, so that (transposed) d h is summed in float32
      # over the chunks.  On accelerators J W_cᵀ is a product in the weight's dtype with
      # float32 sums (the speed of bfloat16 matrix units; J rounded to bfloat16, as the
      # gradient will be); the CPU, which has no bfloat16 product, keeps J in float32.
      def product(rounded):
        return lambda: jnp.stack([
            jnp.dot(j.astype(w.dtype), w_j.T, preferred_element_type=acc) if rounded
            else jnp.dot(j, w_j.T.astype(acc)) for j in jac])

      a = lax.platform_dependent(cpu=product(False), default=product(True))
      out = out + jnp.sum(a * dh, axis=-1)
    if dw_j is not None:  # (transposed: d W_c = hᵀ dz, in the weight's dtype)
      zdot = zdot + jnp.dot(h, dw_j).astype(acc)
    if db_j is not None:
      zdot = zdot + db_j.astype(acc)
    return out + jnp.stack([jnp.sum(j * zdot, axis=-1) for j in jac])

  def body(j, out):
    return out + contract(j * chunk, chunk, dh, dw, db)

  out = lax.fori_loop(0, full, body, jnp.zeros((outputs, n), acc))
  if rest:
    out = out + contract(full * chunk, rest, dh, dw, db)
  return _LossAndLse(out[0], out[1] if cfg.with_lse else jnp.zeros_like(out[0]))


@functools.partial(jax.custom_jvp, nondiff_argnums=(4,))
def linear_xent(h, w, b, code, cfg: Config) -> Outputs:
  """Per-token loss, lse and counted of ``softmax(h w + b)``, chunk by chunk."""
  r = _row_loss(_statistics_pass(h, w, b, code, cfg), code, cfg)
  return Outputs(r.loss, r.lse, r.counted)


@functools.partial(linear_xent.defjvp, symbolic_zeros=True)
def _linear_xent_jvp(cfg, primals, tangents):
  # ℓ̇ = Σ_c (∂ℓ/∂z_c) ż_c with ∂ξ/∂z = y − t (lecture, "Derivative of the cross-entropy
  # loss function for the softmax function"; the options as in _chunk_jacobian) and
  # ż = ḣ W + h Ẇ + ḃ, summed chunk by chunk.
  h, w, b, code = primals
  dh, dw, db, _ = tangents
  r = _row_loss(_statistics_pass(h, w, b, code, cfg), code, cfg)
  t = _chunked_tangents(h, w, b, code, r.coefs, cfg, dh, dw, db)
  return (Outputs(r.loss, r.lse, r.counted),
          Outputs(t.loss, t.lse, np.zeros(r.counted.shape, jax.dtypes.float0)))
