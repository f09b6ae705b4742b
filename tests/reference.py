"""Float64 NumPy references for the tests: the package's own, plus a PyTorch-style loop."""

from __future__ import annotations

import numpy as np

from softmax_jax._reference import (  # noqa: F401  (re-exported for the tests)
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
