"""The ``Σ|terms|`` behind each entry of the grid's results, in float64 NumPy.

The scale ``M`` the rounding of an entry is proportional to where its terms cancel
(a saturated softmax, whose derivative is far below the size of its terms); the grid
holds each entry to ``rtol·max(M, S)``.  The probabilities ``y_c = e^{z_c − m} / Σ``
are taken to carry a relative error ``ε(1 + |z_c − m|)``: the exponential turns the
rounding of its argument into a relative error of its result, which matters where a
whole example lies in the tail of a saturated softmax.  ``ỹ`` below is
``y·(1 + |z − m|)``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from softmax_jax.verify import _references as ref


class Probabilities(NamedTuple):
  """The softmax ``y`` and ``ỹ = y·(1 + |z − max z|)``, the size of the rounding it carries."""

  y: np.ndarray
  rounding: np.ndarray


def probabilities(x, where=None) -> Probabilities:
  y = ref.softmax(x, -1, where)
  z = ref.f64(x)
  v = ref.valid(z, where)
  m = np.max(np.where(v, z, -np.inf), axis=-1, keepdims=True)
  shifted = np.where(v & np.isfinite(m), z - np.where(np.isfinite(m), m, 0.0), 0.0)
  return Probabilities(y, y * (1 + np.abs(shifted)))


def softmax_product(x, v, where=None) -> np.ndarray:
  """Of ``y ⊙ (v − ⟨y, v⟩)``: ``ỹ ⊙ (|v| + ⟨y, |v|⟩) + y ⟨ỹ, |v|⟩``."""
  y, yc = probabilities(x, where)
  av = np.abs(ref.f64(v))
  return (yc * (av + np.sum(y * av, -1, keepdims=True))
          + y * np.sum(yc * av, -1, keepdims=True))


def log_softmax_jvp(x, v, where=None) -> np.ndarray:
  """Of ``v − ⟨y, v⟩``: ``|v| + ⟨ỹ, |v|⟩``."""
  yc = probabilities(x, where).rounding
  av = np.abs(ref.f64(v))
  return av + np.sum(yc * av, -1, keepdims=True)


def log_softmax_vjp(x, u, where=None) -> np.ndarray:
  """Of ``u − y Σu`` over valid entries: ``|u| + ỹ Σ|u|``."""
  yc = probabilities(x, where).rounding
  au = np.where(ref.valid(x, where), np.abs(ref.f64(u)), 0.0)
  return au + yc * np.sum(au, -1, keepdims=True)


def softmax_jacobian(x, where=None) -> np.ndarray:
  """Of ``diag(y) − y yᵀ``: ``ỹ_i δ_ij + ỹ_i y_j + y_i ỹ_j``."""
  y, yc = probabilities(x, where)
  return (yc[..., :, None] * np.eye(y.shape[-1]) + yc[..., :, None] * y[..., None, :]
          + y[..., :, None] * yc[..., None, :])


def cross_entropy_value(x, q, where) -> np.ndarray:
  """Of ``Σ_c q_c (lse − z_c)``: ``Σ_c q_c (|lse| + |z_c|)`` over valid classes."""
  v = ref.valid(x, where)
  z = np.where(v, ref.f64(x), 0.0)
  lse = np.where(v.any(-1), ref.logsumexp(x, -1, where), 0.0)
  return np.sum(np.where(v, q * (np.abs(lse)[..., None] + np.abs(z)), 0.0), -1)
