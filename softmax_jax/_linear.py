r"""Linear cross-entropy computed in chunks of tokens: the ``N × V`` logits never exist.

``linear_cross_entropy(h, W, t)`` is ``ξ(t, softmax(h W + b))`` per token.  A
language model's output layer has ``V`` of 32k–256k classes, and the
materialised logits (and their gradient) dominate its memory.  Here a
``jax.custom_vjp`` walks over chunks of ``chunk_size`` tokens:

- forward: per chunk, ``z = h_c W + b`` (``[chunk, V]``), its log-sum-exp and the
  loss; only ``lse`` (``[N]``) is saved;
- backward: per chunk, ``z`` again, ``y = exp(z − lse)``, the lecture's
  ``∂ξ/∂z = y − t`` (with the options below folded in), then
  ``d h_c = dz Wᵀ`` and ``d W += h_cᵀ dz``, ``d b += Σ dz``.

So temporary memory is ``O(chunk · V)`` instead of ``O(N · V)``.  Options per
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

_DEFAULT_CHUNK_BYTES = 8 << 20  # logits of one chunk, float32
_PAD = -(2**31)  # label of the rows that pad the last chunk


def _logits(h, w, b, softcap):
  """``(z, tanh factor or None)`` for one chunk, in float32 (or float64)."""
  acc = jnp.promote_types(w.dtype, jnp.float32)
  z = jnp.dot(h, w, preferred_element_type=acc)
  if b is not None:
    z = z + b.astype(acc)
  if softcap is None:
    return z, None
  th = jnp.tanh(z / softcap)
  return softcap * th, th


def _row_terms(z, labels, valid, eps, z_loss):
  """Per-row ``(loss, lse)``; rows that are not counted give 0, bad labels NaN."""
  m = lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
  lse = (m + jnp.log(jnp.sum(jnp.exp(z - m), axis=-1, keepdims=True)))[:, 0]
  z_t = jnp.take_along_axis(z, jnp.where(valid, labels, 0)[:, None], axis=-1)[:, 0]
  loss = (1 - eps) * (lse - z_t)
  if eps:
    loss = loss + eps * (lse - jnp.mean(z, axis=-1))
  if z_loss:
    loss = loss + z_loss * jnp.square(lse)
  zero = jnp.zeros_like(loss)
  bad = _bad(labels, valid, z.shape[-1])
  loss = jnp.where(bad, jnp.full_like(loss, jnp.nan), loss)
  return jnp.where(valid, loss, zero), jnp.where(valid, lse, zero)


def _chunks(a, chunk, fill=0):
  """``a`` (``[N, ...]``) padded to whole chunks and split as ``[N/chunk, chunk, ...]``."""
  n = a.shape[0]
  pad = -n % chunk
  if pad:
    a = jnp.concatenate([a, jnp.full((pad,) + a.shape[1:], fill, a.dtype)])
  return a.reshape((-1, chunk) + a.shape[1:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7, 8))
def _lce(h, w, b, labels, chunk, ignore_index, eps, z_loss, softcap):
  return _lce_fwd(h, w, b, labels, chunk, ignore_index, eps, z_loss, softcap)[0]


def _valid(labels, ignore_index):
  """Rows that count: every label except ``ignore_index`` (and the padding, label −2³¹)."""
  ok = labels != _PAD
  if ignore_index is not None:
    ok = ok & (labels != ignore_index)
  return ok


def _bad(labels, valid, v):
  return valid & ((labels < 0) | (labels >= v))


def _lce_fwd(h, w, b, labels, chunk, ignore_index, eps, z_loss, softcap):
  n = h.shape[0]
  hc, tc = _chunks(h, chunk), _chunks(labels, chunk, fill=_PAD)

  def body(_, xs):
    h_i, t_i = xs
    z, _ = _logits(h_i, w, b, softcap)
    return None, _row_terms(z, t_i, _valid(t_i, ignore_index), eps, z_loss)

  _, (loss, lse) = lax.scan(body, None, (hc, tc))
  loss, lse = loss.reshape(-1)[:n], lse.reshape(-1)[:n]
  return (loss, lse), (h, w, b, labels, lse)


def _lce_bwd(chunk, ignore_index, eps, z_loss, softcap, res, cts):
  h, w, b, labels, lse = res
  g_loss, g_lse = cts
  n, v = h.shape[0], w.shape[1]
  valid = _valid(labels, ignore_index)
  g_loss = jnp.where(valid, g_loss, jnp.zeros_like(g_loss))
  g_lse = jnp.where(valid, g_lse, jnp.zeros_like(g_lse))
  acc = jnp.promote_types(w.dtype, jnp.float32)
  xs = (_chunks(h, chunk), _chunks(labels, chunk, fill=_PAD), _chunks(lse, chunk),
        _chunks(g_loss, chunk), _chunks(g_lse, chunk))

  def body(carry, x):
    dw, db = carry
    h_i, t_i, lse_i, gl_i, gz_i = x
    z, th = _logits(h_i, w, b, softcap)
    y = jnp.exp(z - lse_i[:, None])
    scale = gl_i * (1 + 2 * z_loss * lse_i) + gz_i  # d(ξ + λ lse²)/d lse and the lse output
    onehot = jnp.arange(v) == t_i[:, None]
    dz = scale[:, None] * y - (gl_i * (1 - eps))[:, None] * onehot  # (…) y − (1 − ε) t
    if eps:
      dz = dz - (gl_i * eps / v)[:, None]
    if th is not None:
      dz = dz * (1 - jnp.square(th))
    live = _valid(t_i, ignore_index)
    dz = jnp.where(live[:, None], dz, jnp.zeros_like(dz))  # skipped and padding rows
    dz = jnp.where(_bad(t_i, live, v)[:, None], jnp.full_like(dz, jnp.nan), dz).astype(acc)
    dh = jnp.dot(dz.astype(w.dtype), w.T, preferred_element_type=acc).astype(h.dtype)
    dw = dw + jnp.dot(h_i.T, dz.astype(h.dtype), preferred_element_type=acc)
    db = db + jnp.sum(dz, axis=0)
    return (dw, db), dh

  init = (jnp.zeros(w.shape, acc), jnp.zeros((v,), acc))
  (dw, db), dh = lax.scan(body, init, xs)
  dh = dh.reshape(-1, h.shape[1])[:n]
  return dh, dw.astype(w.dtype), None if b is None else db.astype(b.dtype), None


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

  The forward and backward passes walk over chunks of ``chunk_size`` tokens, so
  only ``[chunk_size, V]`` logits exist at a time; the residuals saved between
  the passes are ``O(N)`` (the log-sum-exp per token).  Values and gradients
  equal those of the materialised ``cross_entropy_with_integer_labels(hidden @
  weight + bias, labels)`` up to rounding.

  Args:
    hidden: ``[N, H]`` hidden states (any leading dims are flattened).
    weight: ``[H, V]`` output weight.
    labels: ``[N]`` integer labels in ``[0, V)``; ``ignore_index`` contributes
      nothing, any other label outside ``[0, V)`` gives a NaN loss and gradient.
    bias: optional ``[V]``.
    chunk_size: tokens per chunk; default: about 8 MB of float32 logits.
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
  labels = jnp.asarray(labels)
  if labels.shape != lead or not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"{fn}: labels must be integers of shape {lead} for hidden of shape "
                     f"{lead + (h.shape[-1],)}, got {labels.dtype} {labels.shape}")
  labels = labels.reshape(-1).astype(jnp.int32)
  b = None
  if bias is not None:
    b = _checks.float_array(bias, "bias", fn)
    if b.shape != (w.shape[1],):
      raise ValueError(f"{fn}: bias has shape {b.shape}, expected ({w.shape[1]},)")
  eps = _checks.label_smoothing(label_smoothing, fn)
  reduction = _checks.reduction(reduction, fn)
  if not (isinstance(z_loss, int | float) and z_loss >= 0):
    raise ValueError(f"{fn}: z_loss must be a number >= 0, got {z_loss!r}")
  if logit_softcap is not None and not (isinstance(logit_softcap, int | float)
                                        and logit_softcap > 0):
    raise ValueError(f"{fn}: logit_softcap must be a positive number or None, "
                     f"got {logit_softcap!r}")
  n, v = h.shape[0], w.shape[1]
  if chunk_size is None:
    chunk_size = max(1, min(n, _DEFAULT_CHUNK_BYTES // (4 * v)))
  if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
    raise ValueError(f"{fn}: chunk_size must be a positive integer, got {chunk_size!r}")
  chunk_size = min(chunk_size, max(n, 1))
  loss, lse = _lce(h, w, b, labels, chunk_size, ignore_index, eps, float(z_loss),
                   None if logit_softcap is None else float(logit_softcap))
  if reduction == "none":
    out = loss.reshape(lead)
  elif reduction == "sum":
    out = jnp.sum(loss)
  else:
    count = jnp.sum(_valid(labels, ignore_index))
    out = jnp.sum(loss) / jnp.maximum(count, 1).astype(loss.dtype)
  return (out, lse.reshape(lead)) if return_lse else out
