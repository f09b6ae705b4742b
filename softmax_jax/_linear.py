r"""Linear cross-entropy computed in vocabulary chunks: the ``N × V`` logits never exist.

``linear_cross_entropy(h, W, t)`` is ``ξ(t, softmax(h W + b))`` per token.  A
language model's output layer has ``V`` of 32k–256k classes, and the
materialised logits (and their gradient) dominate its memory.  Here a
``jax.custom_vjp`` walks over the vocabulary in chunks of ``chunk_size`` columns:

- forward: per chunk, ``z = h W[:, c] + b[c]`` (``[N, chunk]``), merged into a
  running row max ``m`` and sum ``s ← s·e^{m − m'} + Σ e^{z − m'}`` (online
  softmax) and the target logit; only ``lse = m + log s`` (``[N]``) is saved;
- backward: per chunk, ``z`` again, ``y = exp(z − lse)``, the lecture's
  ``∂ξ/∂z = y − t`` (with the options below folded in), then
  ``d W[:, c] = hᵀ dz`` written in place, ``d h += dz W[:, c]ᵀ``, ``d b[c] = Σ dz``.

So temporary memory is ``O(N · chunk + N · H)`` instead of ``O(N · V)``.  Options per
token (with ``lse = log Σ_c e^{z_c}`` and ``ε`` the label smoothing):

.. math::
  \ell = (1-\varepsilon)(\mathrm{lse} - z_t) + \varepsilon\Big(\mathrm{lse} - \frac1V\sum_c z_c\Big)
         + \lambda_z\, \mathrm{lse}^2, \qquad
  \frac{\partial \ell}{\partial z_c} = (1 + 2\lambda_z \mathrm{lse})\, y_c - (1-\varepsilon)\, t_c
         - \frac{\varepsilon}{V}

(``λ_z`` is PaLM's ``z_loss``).  With ``logit_softcap = s`` the logits are
``s·tanh(z/s)`` and the gradient gains the factor ``1 − tanh²(z/s)``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from . import _checks

_DEFAULT_CHUNK_BYTES = 32 << 20  # logits of one chunk, float32


def _logits(h, w, b, softcap):
  """``(z, tanh factor or None)`` for one vocabulary chunk, in float32 (or float64)."""
  acc = jnp.promote_types(w.dtype, jnp.float32)
  z = jnp.dot(h, w, preferred_element_type=acc)
  if b is not None:
    z = z + b.astype(acc)
  if softcap is None:
    return z, None
  th = jnp.tanh(z / softcap)
  return softcap * th, th


def _valid(labels, ignore_index):
  """Rows that count: every label except ``ignore_index``."""
  if ignore_index is None:
    return jnp.ones(labels.shape, bool)
  return labels != ignore_index


def _bad(labels, valid, v):
  return valid & ((labels < 0) | (labels >= v))


def _over_vocab(w, b, chunk, fn, carry):
  """``carry = fn(w_chunk, b_chunk, offset, carry)`` over the vocabulary in chunks.

  Whole chunks are read with ``dynamic_slice`` inside a loop (no copy of
  ``w``); a remainder narrower than ``chunk`` is handled once after it.
  """
  v = w.shape[1]
  full, rest = divmod(v, chunk)

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


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7, 8))
def _lce(h, w, b, labels, chunk, ignore_index, eps, z_loss, softcap):
  return _lce_fwd(h, w, b, labels, chunk, ignore_index, eps, z_loss, softcap)[0]


def _lce_fwd(h, w, b, labels, chunk, ignore_index, eps, z_loss, softcap):
  n, v = h.shape[0], w.shape[1]
  acc = jnp.promote_types(w.dtype, jnp.float32)

  def step(w_j, b_j, start, carry):
    m, s, z_t, z_sum = carry
    z, _ = _logits(h, w_j, b_j, softcap)  # [N, chunk]
    m_new = jnp.maximum(m, lax.stop_gradient(jnp.max(z, axis=-1)))
    s = s * jnp.exp(m - m_new) + jnp.sum(jnp.exp(z - m_new[:, None]), axis=-1)  # online
    local = labels - start
    mine = (local >= 0) & (local < z.shape[1])
    picked = jnp.take_along_axis(z, jnp.clip(local, 0, z.shape[1] - 1)[:, None], axis=-1)[:, 0]
    z_t = z_t + jnp.where(mine, picked, jnp.zeros_like(picked))
    if eps:
      z_sum = z_sum + jnp.sum(z, axis=-1)
    return m_new, s, z_t, z_sum

  zeros = jnp.zeros((n,), acc)
  init = (jnp.full((n,), -jnp.inf, acc), zeros, zeros, zeros)
  m, s, z_t, z_sum = _over_vocab(w, b, chunk, step, init)
  lse = m + jnp.log(s)
  loss = (1 - eps) * (lse - z_t)
  if eps:
    loss = loss + eps * (lse - z_sum / v)
  if z_loss:
    loss = loss + z_loss * jnp.square(lse)
  valid = _valid(labels, ignore_index)
  loss = jnp.where(_bad(labels, valid, v), jnp.full_like(loss, jnp.nan), loss)
  # The residual keeps every row's lse: the backward pass needs exp(z − lse) ≤ 1 on the
  # skipped rows too (their gradient is zeroed, but exp(z) alone could overflow).
  return (jnp.where(valid, loss, zeros), jnp.where(valid, lse, zeros)), (h, w, b, labels, lse)


def _lce_bwd(chunk, ignore_index, eps, z_loss, softcap, res, cts):
  h, w, b, labels, lse = res
  g_loss, g_lse = cts
  v = w.shape[1]
  valid = _valid(labels, ignore_index)
  zero = jnp.zeros_like(g_loss)
  g_loss, g_lse = jnp.where(valid, g_loss, zero), jnp.where(valid, g_lse, zero)
  acc = jnp.promote_types(w.dtype, jnp.float32)
  scale = g_loss * (1 + 2 * z_loss * lse) + g_lse  # d(ξ + λ lse²)/d lse, and the lse output
  nan_rows = _bad(labels, valid, v)[:, None]

  def step(w_j, b_j, start, carry):
    dh, dw, db = carry
    z, th = _logits(h, w_j, b_j, softcap)
    y = jnp.exp(z - lse[:, None])
    onehot = jnp.arange(z.shape[1]) + start == labels[:, None]
    dz = scale[:, None] * y - (g_loss * (1 - eps))[:, None] * onehot  # (…) y − (1 − ε) t
    if eps:
      dz = dz - (g_loss * eps / v)[:, None]
    if th is not None:
      dz = dz * (1 - jnp.square(th))
    dz = jnp.where(nan_rows, jnp.full_like(dz, jnp.nan), dz)
    dh = dh + jnp.dot(dz.astype(w.dtype), w_j.T, preferred_element_type=acc)
    dw_j = jnp.dot(h.T, dz.astype(h.dtype), preferred_element_type=acc).astype(w.dtype)
    dw = lax.dynamic_update_slice_in_dim(dw, dw_j, start, axis=1)
    if db is not None:
      db = lax.dynamic_update_slice_in_dim(db, jnp.sum(dz, axis=0).astype(db.dtype), start, 0)
    return dh, dw, db

  init = (jnp.zeros(h.shape, acc), jnp.zeros_like(w), None if b is None else jnp.zeros_like(b))
  dh, dw, db = _over_vocab(w, b, chunk, step, init)
  return dh.astype(h.dtype), dw, db, None


_lce.defvjp(_lce_fwd, _lce_bwd)


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

  The forward and backward passes walk over the vocabulary in chunks of
  ``chunk_size`` columns, so only ``[N, chunk_size]`` logits exist at a time
  (the running log-sum-exp is merged as in online softmax); the residuals saved between
  the passes are ``O(N)`` (the log-sum-exp per token).  Values and gradients
  equal those of the materialised ``cross_entropy_with_integer_labels(hidden @
  weight + bias, labels)`` up to rounding.

  Args:
    hidden: ``[N, H]`` hidden states (any leading dims are flattened).
    weight: ``[H, V]`` output weight.
    labels: ``[N]`` integer labels in ``[0, V)``; ``ignore_index`` contributes
      nothing, any other label outside ``[0, V)`` gives a NaN loss and gradient.
    bias: optional ``[V]``.
    chunk_size: vocabulary columns per chunk; default: about 32 MB of float32
      logits, a multiple of 128.
    ignore_index: a label value to skip.
    label_smoothing: ``ε`` in ``[0, 1)``: the target is ``(1 − ε) t + ε / V``.
    z_loss: PaLM's auxiliary ``λ_z · lse²`` per token.
    logit_softcap: ``s`` to use ``s·tanh(z/s)`` as the logits (Gemma 2).
    reduction: ``"mean"`` (over the counted tokens), ``"sum"`` or ``"none"`` (``[N]``).
    return_lse: also return the per-token log-sum-exp ``[N]`` (0 for skipped tokens).

  Returns:
    The loss, or ``(loss, lse)``.

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
  h = _checks.float_array(hidden, "hidden", fn)
  w = _checks.float_array(weight, "weight", fn)
  if w.ndim != 2 or h.shape[-1] != w.shape[0]:
    raise ValueError(f"{fn}: weight has shape {w.shape} but hidden has shape {h.shape}; "
                     f"weight must be [{h.shape[-1]}, classes]")
  lead = h.shape[:-1]
  h = h.reshape(-1, h.shape[-1])
  labels = _checks.integer_labels(labels, lead, f"hidden of shape {lead + (h.shape[-1],)}", fn)
  labels = labels.reshape(-1).astype(jnp.int32)
  b = None
  if bias is not None:
    b = _checks.float_array(bias, "bias", fn)
    if b.shape != (w.shape[1],):
      raise ValueError(f"{fn}: bias has shape {b.shape}, expected ({w.shape[1]},)")
  eps = _checks.label_smoothing(label_smoothing, fn)
  reduction = _checks.reduction(reduction, fn)
  z_loss = _checks.z_loss(z_loss, fn)
  softcap = _checks.logit_softcap(logit_softcap, fn)
  n, v = h.shape[0], w.shape[1]
  if chunk_size is None:  # about _DEFAULT_CHUNK_BYTES of float32 logits, a multiple of 128
    chunk_size = max(128, _DEFAULT_CHUNK_BYTES // (4 * max(n, 1)) // 128 * 128)
  if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
    raise ValueError(f"{fn}: chunk_size must be a positive integer, got {chunk_size!r}")
  chunk_size = min(chunk_size, v)
  loss, lse = _lce(h, w, b, labels, chunk_size, ignore_index, eps, z_loss, softcap)
  if reduction == "none":
    out = loss.reshape(lead)
  elif reduction == "sum":
    out = jnp.sum(loss)
  else:
    count = jnp.sum(_valid(labels, ignore_index))
    out = jnp.sum(loss) / jnp.maximum(count, 1).astype(loss.dtype)
  return (out, lse.reshape(lead)) if return_lse else out
