"""Plain float64 NumPy references, written from the lecture's formulas."""

from __future__ import annotations

import numpy as np


def _f64(x):
  return np.asarray(x, dtype=np.float64)


def _valid(x, where):
  v = x != -np.inf
  return v if where is None else v & np.broadcast_to(where, x.shape)


def logsumexp(x, axis=-1, where=None):
  x = _f64(x)
  v = _valid(x, where)
  xm = np.where(v, x, -np.inf)
  m = np.max(xm, axis=axis, keepdims=True)
  m = np.where(np.isfinite(m), m, 0.0)
  s = np.sum(np.exp(xm - m), axis=axis, keepdims=True)
  with np.errstate(divide="ignore"):
    return np.squeeze(m + np.log(s), axis)


def softmax(x, axis=-1, where=None):
  """y_c = e^{z_c} / Σ_d e^{z_d} over valid entries; zeros on an empty row."""
  x = _f64(x)
  v = _valid(x, where)
  xm = np.where(v, x, -np.inf)
  m = np.max(xm, axis=axis, keepdims=True)
  m = np.where(np.isfinite(m), m, 0.0)
  e = np.exp(xm - m)
  s = np.sum(e, axis=axis, keepdims=True)
  return e / np.where(s > 0, s, 1.0)


def log_softmax(x, axis=-1, where=None):
  """log y_c = (z_c − m) − log Σ_d e^{z_d − m}: m kept apart so huge logits keep log s."""
  x = _f64(x)
  v = _valid(x, where)
  xm = np.where(v, x, -np.inf)
  m = np.max(xm, axis=axis, keepdims=True)
  m = np.where(np.isfinite(m), m, 0.0)
  s = np.sum(np.exp(xm - m), axis=axis, keepdims=True)
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(v, (xm - m) - np.log(s), -np.inf)


def softmax_jacobian(x):
  """J[..., i, j] = y_i (δ_ij − y_j) over the last axis."""
  y = softmax(x)
  return y[..., :, None] * (np.eye(y.shape[-1]) - y[..., None, :])


def cross_entropy(logits, targets, where=None, eps=0.0):
  """Per-row −Σ t'_c log y_c with t' smoothed over valid classes."""
  z = _f64(logits)
  t = _f64(targets)
  v = _valid(z, where)
  k = v.sum(-1, keepdims=True)
  ts = (1 - eps) * t + eps * v / np.maximum(k, 1)
  logp = log_softmax(z, -1, where)
  return -np.sum(np.where(v, ts * np.where(v, logp, 0.0), 0.0), axis=-1)


def torch_cross_entropy(logits, labels, weights=None, ignore_index=-100, eps=0.0,
                        reduction="mean"):
  """PyTorch's documented F.cross_entropy for class-index targets, in a loop."""
  z = _f64(logits)
  n, c = z.shape
  w = np.ones(c) if weights is None else _f64(weights)
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


def binary_cross_entropy(logits, labels):
  z = _f64(logits)
  y = _f64(labels)
  h = 1.0 / (1.0 + np.exp(-z))
  return -(y * np.log(h) + (1 - y) * np.log1p(-h))
