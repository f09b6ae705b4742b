"""Plain float64 NumPy references, written from the lecture's formulas.

Independent of the JAX implementation: used by ``softmax_jax.verify`` and the
tests as the ground truth.  Class axis last, any leading batch dimensions.
Masking follows the package's rule: an entry is valid when ``where`` is true
(or absent) and the logit is not ``-inf``; a row with no valid entry has
probability 0, loss 0 and zero derivatives.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


def f64(x) -> np.ndarray:
  return np.asarray(x, dtype=np.float64)


def valid(x, where=None) -> np.ndarray:
  v = f64(x) != -np.inf
  return v if where is None else v & np.broadcast_to(np.asarray(where, bool), v.shape)


class _Shifted(NamedTuple):
  """Logits less their row max over valid entries (``-inf`` elsewhere), and the valid mask."""

  z: np.ndarray
  valid: np.ndarray


def _shift(x, axis, where) -> _Shifted:
  x = f64(x)
  v = valid(x, where)
  xm = np.where(v, x, -np.inf)
  m = np.max(xm, axis=axis, keepdims=True)
  m = np.where(np.isfinite(m), m, 0.0)
  return _Shifted(xm - m, v)


def softmax(x, axis=-1, where=None) -> np.ndarray:
  """y_c = e^{z_c} / Σ_d e^{z_d} over valid entries; zeros on an empty row."""
  shifted, _ = _shift(x, axis, where)
  e = np.exp(shifted)
  s = np.sum(e, axis=axis, keepdims=True)
  return e / np.where(s > 0, s, 1.0)


def log_softmax(x, axis=-1, where=None) -> np.ndarray:
  """log y_c = (z_c − m) − log Σ_d e^{z_d − m}, with m kept apart so huge logits keep log s."""
  shifted, v = _shift(x, axis, where)
  s = np.sum(np.exp(shifted), axis=axis, keepdims=True)
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(v, shifted - np.log(s), -np.inf)


def logsumexp(x, axis=-1, where=None) -> np.ndarray:
  x = f64(x)
  v = valid(x, where)
  xm = np.where(v, x, -np.inf)
  m = np.max(xm, axis=axis, keepdims=True)
  m = np.where(np.isfinite(m), m, 0.0)
  s = np.sum(np.exp(xm - m), axis=axis, keepdims=True)
  with np.errstate(divide="ignore"):
    return np.squeeze(m + np.log(s), axis)


def softmax_jacobian(x, where=None) -> np.ndarray:
  """J[..., i, j] = y_i (δ_ij − y_j) over the last axis."""
  y = softmax(x, -1, where)
  return y[..., :, None] * (np.eye(y.shape[-1]) - y[..., None, :])


def softmax_jvp(x, v, where=None) -> np.ndarray:
  """J v = y ⊙ (v − ⟨y, v⟩)."""
  y = softmax(x, -1, where)
  v = f64(v)
  return y * (v - np.sum(y * v, -1, keepdims=True))


def log_softmax_jvp(x, v, where=None) -> np.ndarray:
  """(δ_ij − y_j) v_j on valid rows i; 0 on invalid ones."""
  y = softmax(x, -1, where)
  v = f64(v)
  return np.where(valid(x, where), v - np.sum(y * v, -1, keepdims=True), 0.0)


def log_softmax_vjp(x, u, where=None) -> np.ndarray:
  """Σ_i u_i (δ_ij − y_j) over valid i."""
  y = softmax(x, -1, where)
  u = np.where(valid(x, where), f64(u), 0.0)
  return u - y * np.sum(u, -1, keepdims=True)


def sigmoid(x) -> np.ndarray:
  """σ(z) = 1 / (1 + e^{−z}), written so that no exponential overflows."""
  x = f64(x)
  e = np.exp(-np.abs(x))
  return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_derivative(x) -> np.ndarray:
  return sigmoid(x) * sigmoid(-f64(x))


class Targets(NamedTuple):
  """Effective targets ``q`` [..., C] of integer labels, and the weight ``w_t`` of each row
  (0 where the row does not count): the denominator of ``reduction="mean"``."""

  q: np.ndarray
  row_weights: np.ndarray


def xent_targets(logits, labels, *, weights=None, ignore_index=None, eps=0.0,
                 where=None) -> Targets:
  """Effective targets q with ξ = Σ_c q_c (−log y_c) for integer labels (PyTorch semantics).

  q_c = (1 − ε) w_t δ_ct + (ε/K) w_c [c valid]; rows that are ignored or have no
  valid class get q = 0.
  """
  z = f64(logits)
  c = z.shape[-1]
  v = valid(z, where)
  k = np.maximum(v.sum(-1, keepdims=True), 1)
  w = np.ones(c) if weights is None else f64(weights)
  labels = np.asarray(labels)
  safe = np.clip(labels, 0, c - 1)
  onehot = np.zeros(z.shape)
  np.put_along_axis(onehot, safe[..., None], 1.0, axis=-1)
  q = (1 - eps) * onehot * w[safe][..., None] + eps * v * w / k
  counted = v.any(-1)
  if ignore_index is not None:
    counted &= labels != ignore_index
  return Targets(np.where(counted[..., None], q, 0.0), np.where(counted, w[safe], 0.0))


def soft_targets(logits, targets, *, eps=0.0, where=None):
  """t' = (1 − ε) t + ε/K on valid classes; 0 on rows without a valid class."""
  z = f64(logits)
  v = valid(z, where)
  k = np.maximum(v.sum(-1, keepdims=True), 1)
  q = (1 - eps) * f64(targets) + eps * v / k
  return np.where(v.any(-1, keepdims=True), q, 0.0)


def xent(logits, q, where=None) -> np.ndarray:
  """Per-row Σ_c q_c (−log y_c) over valid classes."""
  logp = log_softmax(logits, -1, where)
  v = valid(logits, where)
  return -np.sum(np.where(v, q * np.where(v, logp, 0.0), 0.0), -1)


def xent_grad(logits, q, where=None) -> np.ndarray:
  """∂ξ/∂z = (Σ q) y − q (the lecture's y − t)."""
  y = softmax(logits, -1, where)
  return np.sum(q, -1, keepdims=True) * y - np.where(valid(logits, where), q, 0.0)


def xent_hvp(logits, q, v, where=None) -> np.ndarray:
  """∂²ξ/∂z² v = (Σ q)(diag(y) − y yᵀ) v."""
  return np.sum(q, -1, keepdims=True) * softmax_jvp(logits, v, where)


def xent_hessian(logits, q, where=None) -> np.ndarray:
  return np.sum(q, -1)[..., None, None] * softmax_jacobian(logits, where)


def binary_cross_entropy(logits, labels) -> np.ndarray:
  """−[y log σ(z) + (1 − y) log(1 − σ(z))] = y softplus(−z) + (1 − y) softplus(z)."""
  z = f64(logits)
  y = f64(labels)
  softplus = lambda a: np.logaddexp(0.0, a)  # noqa: E731
  return y * softplus(-z) + (1 - y) * softplus(z)


def binary_cross_entropy_grad(logits, labels) -> np.ndarray:
  """∂/∂z = σ(z) − y (the lecture's h − y)."""
  return sigmoid(logits) - f64(labels)
