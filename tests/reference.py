"""Float64 NumPy references for the tests: the package's own, plus a PyTorch-style loop,
and the materialised linear cross-entropy in jax.numpy (to be differentiated by JAX)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from softmax_jax.verify._references import (  # noqa: F401  (re-exported for the tests)
  binary_cross_entropy,
  log_softmax,
  logsumexp,
  soft_targets,
  softmax,
  softmax_jacobian,
  xent,
)


def cross_entropy(logits, targets, where=None, eps=0.0):
  """Per-row −Σ t'_c log y_c with t' smoothed over valid classes."""
  return xent(logits, soft_targets(logits, targets, eps=eps, where=where), where)


def torch_cross_entropy(logits, labels, weights=None, ignore_index=-100, eps=0.0,
                        reduction="mean"):
  """PyTorch's documented F.cross_entropy for class-index targets, written as a loop."""
  z = np.asarray(logits, np.float64)
  n, c = z.shape
  w = np.ones(c) if weights is None else np.asarray(weights, np.float64)
  losses, denom = [], 0.0
  for i in range(n):
    if labels[i] == ignore_index:
      losses.append(0.0)
      continue
    logp = log_softmax(z[i])
    nll = -w[labels[i]] * logp[labels[i]]
    smooth = -np.sum(w * logp)
    losses.append((1 - eps) * nll + eps / c * smooth)
    denom += w[labels[i]]
  losses = np.array(losses)
  if reduction == "none":
    return losses
  if reduction == "sum":
    return losses.sum()
  return losses.sum() / denom


# ---------------------------------------------------------------------------
# linear_cross_entropy's reference (tests/losses/test_linear*.py)
# ---------------------------------------------------------------------------


def materialised_linear_cross_entropy(h, w, t, *, b=None, ignore_index=None, eps=0.0,
                                      z_loss=0.0, softcap=None, reduction="mean",
                                      lse_out=False):
  """``ξ(t, softmax(h w + b))`` on the materialised logits with PyTorch's semantics, in
  ``jax.numpy`` so that JAX differentiates it (float64 when the inputs are): K valid
  (finite) classes, empty rows not counted.  The reference of linear_cross_entropy."""
  z = h @ w + (0 if b is None else b)
  if softcap is not None:
    z = jnp.where(z == -jnp.inf, -jnp.inf, softcap * jnp.tanh(z / softcap))
  valid = z != -jnp.inf
  k = valid.sum(-1)
  nonempty = k > 0
  lse = jax.nn.logsumexp(jnp.where(nonempty[:, None], z, 0), axis=-1)
  neg_log_y = lse[:, None] - z
  is_class = (t >= 0) & (t < w.shape[1])
  tt = jnp.where(is_class, t, 0)
  nll = jnp.take_along_axis(neg_log_y, tt[:, None], axis=-1)[:, 0]
  smooth = eps / jnp.maximum(k, 1) * jnp.sum(jnp.where(valid, neg_log_y, 0), -1)
  loss = (1 - eps) * nll + smooth + z_loss * lse**2
  counted = nonempty if ignore_index is None else nonempty & (t != ignore_index)
  bad = counted & ~(is_class & jnp.take_along_axis(valid, tt[:, None], axis=-1)[:, 0])
  loss = jnp.where(bad, jnp.nan, jnp.where(counted, loss, 0.0))
  if reduction == "sum":
    loss = loss.sum()
  elif reduction == "mean":
    loss = loss.sum() / jnp.maximum(counted.sum(), 1)
  return (loss, jnp.where(counted, lse, 0.0)) if lse_out else loss


# ---------------------------------------------------------------------------
# The conformance matrix's reference (tests/test_conformance.py)
# ---------------------------------------------------------------------------

from softmax_jax.verify._references import f64  # noqa: E402


def integer_label_rows(logits, labels, *, weights=None, ignore_index=None, eps=0.0, z_loss=0.0,
                       cap=None, where=None, hessian=True):
  """Per-row integer-label cross-entropy in float64 with PyTorch ``F.cross_entropy`` semantics.

  ``ℓ = (1−ε) w_t (−log y_t) + (ε/K) Σ_{c valid} w_c (−log y_c) + λ_z lse²`` on the
  soft-capped logits ``cap·tanh(z/cap)`` (``−inf`` kept); a class is valid when ``where``
  allows it and its capped logit is not ``−inf``.  A row counts when its label is not
  ``ignore_index`` and it has a valid class; a counted row whose label is outside
  ``[0, C)`` or on an invalid class, or that holds a ``+inf`` or NaN valid logit, has a
  NaN loss and a NaN gradient row; a row that does not count has loss 0 and gradient 0.

  Returns a dict of ``[N]`` / ``[N, C]`` / ``[N, C, C]`` arrays: ``loss``, ``grad``
  (``∂ℓ/∂z`` from the analytic formula, the label's ``y_t − 1`` as ``−Σ_{c≠t} y_c``),
  ``hess`` (``∂²ℓ/∂z²``, left out with ``hessian=False``), ``counted``, ``w_t`` (the
  label's weight on counted rows, NaN where it is undefined: class weights and a label
  outside ``[0, C)``), and the error
  scales ``loss_mag`` and ``grad_mag`` (``Σ|terms|`` of the stable formulas, with the
  rounding of ``z − m`` amplified by ``exp``).
  """
  z = f64(logits)
  n, c = z.shape
  labels = np.asarray(labels)
  w = np.ones(c) if weights is None else f64(weights)
  allow = np.ones((n, c), bool) if where is None else np.broadcast_to(np.asarray(where, bool),
                                                                       (n, c))
  out = {k: np.zeros(s) for k, s in [("loss", n), ("grad", (n, c)), ("w_t", n),
                                      ("loss_mag", n), ("grad_mag", (n, c))]}
  out["hess"] = np.zeros((n, c, c)) if hessian else None
  out["counted"] = np.zeros(n, bool)
  with np.errstate(all="ignore"):
    if cap is None:
      zc, th = z, np.zeros_like(z)
    else:
      th = np.tanh(z / cap)
      zc = np.where(z == -np.inf, -np.inf, cap * th)
    for i in range(n):
      valid = allow[i] & (zc[i] != -np.inf)
      label = int(labels[i])
      if not valid.any() or (ignore_index is not None and label == int(ignore_index)):
        continue
      out["counted"][i] = True
      in_range = 0 <= label < c
      out["w_t"][i] = w[label] if in_range else (1.0 if weights is None else np.nan)
      row = zc[i][valid]
      if not in_range or not valid[label] or np.isnan(row).any() or (row == np.inf).any():
        out["loss"][i] = np.nan
        out["grad"][i] = np.nan
        if hessian:
          out["hess"][i] = np.nan
        continue
      m = row.max()
      e = np.where(valid, np.exp(np.where(valid, zc[i], 0.0) - m), 0.0)
      s = e.sum()
      log_s = np.log(s)
      lse = m + log_s
      y = e / s
      k = valid.sum()
      wv = np.where(valid, w, 0.0)
      big_w = wv.sum()
      w_t = w[label]
      neg_log_y = np.where(valid, log_s - (np.where(valid, zc[i], 0.0) - m), 0.0)
      out["loss"][i] = ((1 - eps) * w_t * neg_log_y[label] + eps / k * np.sum(wv * neg_log_y)
                        + z_loss * lse**2)
      # ∂ℓ/∂z'_c = (1−ε) w_t (y_c − δ_ct) + (ε/K)(W y_c − w_c) + 2 λ_z lse y_c
      hit = np.zeros(c)
      hit[label] = 1.0
      y_minus_t = np.where(hit == 1, -np.sum(np.where(hit == 1, 0.0, y)), y)
      g = (1 - eps) * w_t * y_minus_t + eps / k * (big_w * y - wv) + 2 * z_loss * lse * y
      a = (1 - eps) * w_t + eps / k * big_w
      h = None
      if hessian:
        jac = np.diag(y) - np.outer(y, y)
        h = (a + 2 * z_loss * lse) * jac + 2 * z_loss * np.outer(y, y)
      # error scales: the rounding of z'_c − m (relative) is amplified by exp
      shift = np.abs(np.where(valid, zc[i], 0.0) - m)
      if cap is not None:
        shift = np.abs(np.where(valid, zc[i], 0.0)) + abs(m)
      span = np.where(valid, 1 + shift + abs(log_s), 0.0)
      ymag = y * span
      label_mag = np.sum(np.where(hit == 1, 0.0, ymag))
      out["loss_mag"][i] = ((1 - eps) * abs(w_t) * (abs(log_s) + span[label])
                            + eps / k * np.sum(np.abs(wv) * (abs(log_s) + span))
                            + z_loss * (lse**2 + 2 * abs(lse) * (abs(m) + abs(log_s))))
      gmag = ((1 - eps) * abs(w_t) * (ymag + hit * label_mag)
              + eps / k * (abs(big_w) * ymag + np.abs(wv))
              + 2 * z_loss * (abs(m) + abs(log_s) + 1) * ymag)
      if cap is not None:
        chain = np.where(valid, 1 - th[i] ** 2, 0.0)
        curv = np.where(valid, -2 * th[i] * chain / cap, 0.0)
        if hessian:
          h = chain[:, None] * h * chain[None, :] + np.diag(g * curv)
        gmag = gmag * chain + np.abs(g) * np.where(valid, 1 + th[i] ** 2, 0.0)
        g = g * chain
      out["grad"][i] = g
      if hessian:
        out["hess"][i] = h
      out["grad_mag"][i] = gmag
  return out


def reduce_integer_label_rows(rows, reduction, cotangent=None) -> dict:
  """The value and derivatives of the rows of :func:`integer_label_rows` reduced:
  ``"none"`` (the value per row; the derivatives those of ``Σ_i u_i ℓ_i`` for the
  cotangent ``u``), ``"sum"``, or ``"mean"`` (``Σ ℓ / Σ_{counted} w_t``, 0 when nothing
  counts).

  Returns ``value``, ``grad`` ``[N, C]``, ``hess`` ``[N, C, N, C]``, their error scales
  ``value_mag`` and ``grad_mag``, and ``care`` ``[N, C]``: False where the gradient is not
  specified (the mean's denominator holds the undefined weight of a label outside
  ``[0, C)``: the loss is NaN, the other rows' gradients depend on that weight)."""
  n, c = rows["grad"].shape
  care = np.ones((n, c), bool)
  if reduction == "none":
    scale = np.ones(n) if cotangent is None else f64(cotangent)
    value, value_mag = rows["loss"], rows["loss_mag"]
  else:
    d = 1.0
    if reduction == "mean":
      w_t = np.where(rows["counted"], rows["w_t"], 0.0)
      if np.isnan(w_t).any():
        care &= np.isnan(rows["grad"])
        w_t = np.nan_to_num(w_t, nan=1.0)
      d = np.sum(w_t)
      d = d if d != 0 else 1.0
    scale = np.full(n, 1 / d)
    value, value_mag = np.sum(rows["loss"]) / d, np.sum(rows["loss_mag"]) / abs(d)
  grad = rows["grad"] * scale[:, None]
  hess = None
  if rows["hess"] is not None:
    hess = np.zeros((n, c, n, c))
    for i in range(n):
      hess[i, :, i, :] = rows["hess"][i] * scale[i]
  return dict(value=value, grad=grad, hess=hess, value_mag=value_mag,
              grad_mag=rows["grad_mag"] * np.abs(scale)[:, None], care=care)
