r"""Linear cross-entropy computed in vocabulary chunks: the ``N × V`` logits never exist.

``linear_cross_entropy(h, W, t)`` is ``ξ(t, softmax(h W + b))`` per token.  A
language model's output layer has ``V`` of 32k–256k classes, and the
materialised logits (and their gradient) dominate its memory.  Here the
vocabulary is walked in chunks of ``chunk_size`` columns:

- statistics: per chunk, ``z = h W[:, c] + b[c]`` (``[N, chunk]``), its
  :class:`~softmax_jax._numerics.RowStats` ``(m, s, tail)`` merged into the
  running ones with the core's ``merge`` (online softmax), the label's logit,
  and with smoothing the number ``K`` of valid (finite) classes and their sum;
  all ``O(N)``;
- derivative: a ``jax.custom_jvp`` whose tangent is again a loop over chunks,
  ``ℓ̇ = Σ_c (∂ℓ/∂z_c) ż_c`` with ``ż = ḣ W + h Ẇ + ḃ`` and the lecture's
  ``∂ξ/∂z = y − t`` (options folded in).  The per-chunk ``∂ℓ/∂z_c`` sits under
  ``jax.checkpoint``, so reverse mode (the transpose of that linear loop) saves
  only the ``O(N)`` statistics and recomputes each chunk: ``d h += dz W_cᵀ``,
  ``d W_c = hᵀ dz``, ``d b_c = Σ dz``.

So temporary memory is ``O(N · chunk)`` plus the gradients, never ``O(N · V)``,
and ``jax.grad``, ``jax.jvp``, ``jax.jacfwd``, ``jax.linearize``, ``vmap`` and
second derivatives all work.  Per token (PyTorch's semantics, ``K`` valid classes,
``lse = log Σ_c e^{z_c}``, ``ε`` the smoothing, ``λ_z`` PaLM's ``z_loss``):

.. math::
  \ell = (1-\varepsilon)(\mathrm{lse} - z_t)
         + \frac{\varepsilon}{K}\sum_{c\ \mathrm{valid}} (\mathrm{lse} - z_c)
         + \lambda_z\, \mathrm{lse}^2, \qquad
  \frac{\partial \ell}{\partial z_c} = (1 + 2\lambda_z \mathrm{lse})\, y_c - (1-\varepsilon)\, t_c
         - \frac{\varepsilon}{K}[c\ \mathrm{valid}]

The label's entry uses ``1 − y_t`` from the tail (:func:`_numerics.complement`).
With ``logit_softcap = s`` the logits are ``s·tanh(z/s)`` (``−inf`` kept) and
the gradient gains the factor ``1 − tanh²(z/s)``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero
from jax.typing import ArrayLike

from softmax_jax import _arguments
from softmax_jax import _numerics as nm

_DEFAULT_CHUNK_BYTES = 32 << 20  # logits of one chunk, float32


class _Config(NamedTuple):
  """The static options (hashable: a ``nondiff_argnums`` of the custom JVP)."""

  chunk: int
  eps: float
  z_loss: float
  cap: float | None
  with_lse: bool  # whether the lse output is used (its tangent is computed)


class _Rows(NamedTuple):
  """What the statistics pass keeps per row (``[N, 1]`` each): ``O(N)``."""

  st: nm.RowStats  # merged (m, s, tail) of the soft-capped logits, finalised
  z_t: jax.Array  # the label's logit (0 where the label is not a class)
  k: jax.Array  # K, the number of valid classes
  z_sum: jax.Array  # Σ of the valid logits (0 without smoothing)


class _Coefs(NamedTuple):
  """Per-row factors of ``∂ℓ/∂z`` (``[N, 1]``), derived from :class:`_Rows`."""

  m: jax.Array  # the row max (a constant)
  log_s: jax.Array  # log s
  lse: jax.Array
  comp: jax.Array  # 1 − y_t
  g: jax.Array  # 1 on counted rows, else 0
  bad: jax.Array  # counted rows with a bad label: NaN derivatives
  coef: jax.Array  # ε / K


def _acc_dtype(w):
  return jnp.promote_types(w.dtype, jnp.float32)


def _logits(h, w, b, cap):
  """``(z, tanh or None)`` for one vocabulary chunk, in float32 (or float64)."""
  acc = _acc_dtype(w)
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


def _row_stats(h, w, b, code, cfg: _Config) -> _Rows:
  """The statistics pass: one matrix product per chunk, nothing wider than a chunk kept."""
  n = h.shape[0]
  acc = _acc_dtype(w)
  index = nm.label_info(code).index[:, None]

  def step(w_j, b_j, start, carry):
    st, z_t, k, z_sum = carry
    z, _ = _logits(h, w_j, b_j, cfg.cap)  # [N, chunk]
    st = nm.merge(st, nm.part_stats(z))
    local = index - start
    mine = (local >= 0) & (local < z.shape[1])
    picked = jnp.take_along_axis(z, jnp.clip(local, 0, z.shape[1] - 1), axis=-1)
    z_t = jnp.where(mine, picked, z_t)
    if cfg.eps:
      k = k + nm.count_valid(z)
      z_sum = z_sum + jnp.sum(jnp.where(z != -jnp.inf, z, 0), axis=-1, keepdims=True)
    return st, z_t, k, z_sum

  zeros = jnp.zeros((n, 1), acc)
  st, z_t, k, z_sum = _over_vocab(w, b, cfg.chunk, step,
                                  (nm.empty_stats((n, 1), acc), zeros, zeros, zeros))
  return _Rows(nm.finalize(st), z_t, k, z_sum)


def _coefs(rows: _Rows, code, cfg: _Config):
  """``(loss [N], lse [N], counted [N], coefficients)`` from the row statistics."""
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
  counted = nm.nonempty(st)[:, 0] & ~info.ignored
  bad = counted & ~(info.is_class & (shifted_t[:, 0] != -jnp.inf))
  loss = nm.finish(loss[:, 0], counted, bad)
  ones = jnp.ones_like(lse)
  g = jnp.where(counted[:, None], ones, 0)
  lse_out = jnp.where(counted, lse[:, 0], 0)
  return loss, lse_out, counted, _Coefs(st.m, log_s, lse, comp, g, bad[:, None], coef)


def _chunk_jacobian(h, w_j, b_j, start, index, c: _Coefs, cfg: _Config):
  """``(∂ℓ/∂z_c, ∂lse/∂z_c)`` of one chunk of raw logits (``[N, chunk]`` each).

  ``(1 + 2λ_z lse) y − (1 − ε) t − (ε/K)[valid]``, the label's entry written with
  ``1 − y_t``; times ``1 − tanh²`` under a soft-cap."""
  z, th = _logits(h, w_j, b_j, cfg.cap)
  y = jnp.exp((z - c.m) - c.log_s)
  a = 1 + 2 * cfg.z_loss * c.lse
  d_loss = a * y
  if cfg.eps:
    d_loss = d_loss - jnp.where(z != -jnp.inf, c.coef, 0)
  keep = 1 - cfg.eps
  label = -keep * c.comp + (a - keep) * y - c.coef  # (a y_t − (1 − ε)) without cancelling
  is_t = lax.broadcasted_iota(jnp.int32, z.shape, 1) + start == index
  # NaN as a factor (the core's rule, as in finish): a bad row's second derivatives are
  # NaN too, while the other rows' derivatives along its inputs stay 0.
  nan_factor = jnp.where(c.bad, jnp.nan, 1).astype(d_loss.dtype)
  d_loss = c.g * jnp.where(is_t, label, d_loss) * nan_factor
  d_lse = c.g * y
  if th is not None:
    chain = 1 - jnp.square(th)
    d_loss, d_lse = d_loss * chain, d_lse * chain
  return d_loss, d_lse


def _is_zero(t):
  return t is None or isinstance(t, SymbolicZero)


def _tangents(h, w, b, code, c: _Coefs, cfg: _Config, dh, dw, db):
  """``(ℓ̇, lsė)`` (``[N]``): ``Σ_c (∂/∂z_c) ż_c`` over the chunks, ``ż = ḣ W + h Ẇ + ḃ``.

  Linear in the tangents; the Jacobian of a chunk is under ``jax.checkpoint`` and
  reads ``W`` itself, so the transpose (reverse mode) recomputes it chunk by
  chunk instead of saving ``[N, V]`` residuals."""
  n, hdim = h.shape
  v, chunk = w.shape[1], cfg.chunk
  full, rest = divmod(v, chunk)
  acc = _acc_dtype(w)
  index = nm.label_info(code).index[:, None]
  dh, dw, db = (None if _is_zero(t) else t for t in (dh, dw, db))
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
  return out[0], (out[1] if cfg.with_lse else jnp.zeros_like(out[0]))


@functools.partial(jax.custom_jvp, nondiff_argnums=(4,))
def _lce(h, w, b, code, cfg: _Config):
  loss, lse, counted, _ = _coefs(_row_stats(h, w, b, code, cfg), code, cfg)
  return loss, lse, counted


@functools.partial(_lce.defjvp, symbolic_zeros=True)
def _lce_jvp(cfg, primals, tangents):
  h, w, b, code = primals
  dh, dw, db, _ = tangents
  loss, lse, counted, c = _coefs(_row_stats(h, w, b, code, cfg), code, cfg)
  t_loss, t_lse = _tangents(h, w, b, code, c, cfg, dh, dw, db)
  return (loss, lse, counted), (t_loss, t_lse, np.zeros(counted.shape, jax.dtypes.float0))


def _labels(labels, ignore_index, shape, of, fn):
  """Label codes ``[N]``: ``ignore_index`` checked against the labels' own dtype, 64-bit
  host labels kept from wrapping, then :func:`_numerics.canonical_labels`."""
  dtype = labels.dtype if hasattr(labels, "dtype") else np.asarray(labels).dtype
  if not jnp.issubdtype(dtype, jnp.integer) or dtype == jnp.bool_:
    raise ValueError(f"{fn}: labels must be integers of shape {shape} for {of}, got {dtype}")
  ignore = _arguments.ignore_index(ignore_index, dtype, fn)
  labels = nm.host_labels(labels, ignore)
  ignore = _arguments.ignore_index(ignore, labels.dtype, fn)  # 32-bit once on the device
  labels = _arguments.integer_labels(labels, shape, of, fn)
  return labels, ignore


def linear_cross_entropy(
    hidden: ArrayLike,
    weight: ArrayLike,
    labels: ArrayLike,
    *,
    bias: ArrayLike | None = None,
    chunk_size: int | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    logit_softcap: float | None = None,
    reduction: str = "mean",
    return_lse: bool = False,
):
  r"""Cross-entropy of ``softmax(hidden @ weight + bias)`` without the ``[N, V]`` logits.

  The vocabulary is walked in chunks of ``chunk_size`` columns, so only
  ``[N, chunk_size]`` logits exist at a time; the row statistics are merged as
  in online softmax, and what reverse mode saves between the passes is
  ``O(N)``.  Values and derivatives equal those of the materialised
  ``cross_entropy_with_integer_labels(hidden @ weight + bias, labels, ...)``
  (PyTorch semantics) up to rounding:

  .. math::
    \ell = (1-\varepsilon)(-\log y_t) + \frac{\varepsilon}{K}\sum_{c\ \mathrm{valid}}
    (-\log y_c) + \lambda_z\, \mathrm{lse}^2

  with ``K`` the number of valid classes (logit not ``−inf``).  The derivative
  is a ``jax.custom_jvp``, so ``jax.grad``, ``jax.jvp``, ``jax.jacfwd``,
  ``jax.linearize``, ``jax.vmap``, ``jax.hessian`` and grad-of-grad all work, for
  every ``reduction`` and with ``return_lse``.  First derivatives use the
  chunked formula (``1 − y_t`` from the tail, as the core losses do); second
  derivatives differentiate the chunk loop itself, which keeps per-chunk
  residuals: fine at the sizes where one takes Hessians, not at ``N × V`` of a
  language model.

  Args:
    hidden: ``[N, H]`` hidden states (any leading dims are flattened).
    weight: ``[H, V]`` output weight.
    labels: ``[N]`` integer labels (any integer dtype, compared in it).
    bias: optional ``[V]``; ``−inf`` entries remove those classes (vocabulary
      padding): they get probability 0, do not count in ``K`` and a label
      pointing at one is invalid.
    chunk_size: vocabulary columns per chunk (any positive integer); default:
      about 32 MB of float32 logits, a multiple of 128.
    ignore_index: a label value to skip (an integer the labels' dtype can hold).
    label_smoothing: ``ε`` in ``[0, 1]``, spread over the ``K`` valid classes.
    z_loss: PaLM's auxiliary ``λ_z · lse²`` per counted token (finite, ``≥ 0``).
    logit_softcap: ``s`` (finite, ``> 0``) to use ``s·tanh(z/s)`` as the logits
      (Gemma 2); ``−inf`` stays ``−inf``.
    reduction: ``"mean"`` (over the counted tokens; 0 if none), ``"sum"`` or
      ``"none"`` (shape of ``labels``).
    return_lse: also return the per-token log-sum-exp (0 for tokens that do not count).

  Returns:
    The loss, or ``(loss, lse)``; float32 for half-precision inputs.

  A token counts unless its label is ``ignore_index`` or its row has no valid
  class (all logits ``−inf``: loss 0, gradient 0).  A counted token whose label
  is outside ``[0, V)`` or points at a ``−inf`` class has a NaN loss and makes
  the gradient NaN, never a silently clamped value (second derivatives between
  it and other rows stay 0).  With half-precision inputs on an accelerator,
  the ``hidden`` part of a forward-mode tangent multiplies ``∂ℓ/∂z`` rounded to
  the weight's dtype (the bfloat16 matrix units); the CPU keeps it in float32.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from softmax_jax import cross_entropy_with_integer_labels, linear_cross_entropy
    >>> h = jax.random.normal(jax.random.key(0), (6, 4))
    >>> w = jax.random.normal(jax.random.key(1), (4, 10))
    >>> t = jnp.array([1, 2, 3, 4, 5, 6])
    >>> bool(jnp.allclose(linear_cross_entropy(h, w, t, chunk_size=4),
    ...                   cross_entropy_with_integer_labels(h @ w, t), rtol=1e-6))
    True
  """
  fn = "linear_cross_entropy"
  h = _arguments.float_array(hidden, "hidden", fn)
  w = _arguments.float_array(weight, "weight", fn)
  if w.ndim != 2 or h.ndim < 1 or h.shape[-1] != w.shape[0]:
    raise ValueError(f"{fn}: weight has shape {w.shape} but hidden has shape {h.shape}; "
                     f"weight must be [{h.shape[-1] if h.ndim else '?'}, classes]")
  lead = h.shape[:-1]
  labels, ignore = _labels(labels, ignore_index, lead, f"hidden of shape {h.shape}", fn)
  h = h.reshape(-1, h.shape[-1])
  b = None
  if bias is not None:
    b = _arguments.float_array(bias, "bias", fn)
    if b.shape != (w.shape[1],):
      raise ValueError(f"{fn}: bias has shape {b.shape}, expected ({w.shape[1]},)")
  eps = _arguments.label_smoothing(label_smoothing, fn)
  reduction = _arguments.reduction(reduction, fn)
  lam = _arguments.z_loss(z_loss, fn)
  cap = _arguments.logit_softcap(logit_softcap, fn)
  v = _arguments.classes(w.shape[1], "weight", fn)
  if chunk_size is None:  # about _DEFAULT_CHUNK_BYTES of float32 logits, a multiple of 128
    chunk_size = max(128, _DEFAULT_CHUNK_BYTES // (4 * max(h.shape[0], 1)) // 128 * 128)
  chunk = min(_arguments.positive_int(chunk_size, "chunk_size", fn), v)
  code = nm.canonical_labels(labels.reshape(-1), v, ignore)
  loss, lse, counted = _lce(h, w, b, code, _Config(chunk, eps, lam, cap, bool(return_lse)))
  out = nm.reduce(loss, counted, reduction)
  if reduction == "none":
    out = out.reshape(lead)
  return (out, lse.reshape(lead)) if return_lse else out
