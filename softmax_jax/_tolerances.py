"""Per-dtype tolerances for comparing results with a float64 reference.

One table, derived from each dtype's machine epsilon (not tuned to pass):

* float64 / float32 are computed in their own precision: a handful of
  roundings per element, so ``rtol = 16 ε``.
* bfloat16 / float16 are computed in float32 and rounded once to the input
  dtype on output (or kept in float32 for losses), so the output rounding,
  ``ε / 2``, dominates: ``rtol = 2 ε`` of the half dtype.

``atol`` equals ``rtol`` and applies to quantities of order one
(probabilities, Jacobian entries, gradients); a comparison passes when
``|got − ref| ≤ atol + rtol·|ref|``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

_FACTOR = {"float64": 16.0, "float32": 16.0, "bfloat16": 2.0, "float16": 2.0}


def tolerance(dtype) -> tuple[float, float]:
  """Returns ``(rtol, atol)`` for results whose inputs had ``dtype``."""
  name = jnp.dtype(dtype).name
  if name not in _FACTOR:
    raise ValueError(f"tolerance: no tolerance for dtype {name}; expected one of {list(_FACTOR)}.")
  eps = float(jnp.finfo(jnp.dtype(dtype)).eps)
  tol = _FACTOR[name] * eps
  return tol, tol


TOLERANCES: dict[str, tuple[float, float]] = {name: tolerance(name) for name in _FACTOR}


def within(got, ref, dtype) -> bool:
  """True when ``got`` matches ``ref`` within :func:`tolerance` of ``dtype``."""
  rtol, atol = tolerance(dtype)
  got = np.asarray(got, dtype=np.float64)
  ref = np.asarray(ref, dtype=np.float64)
  same_inf = np.isinf(ref) & (got == ref)
  err = np.abs(got - ref)
  return bool(np.all(same_inf | (err <= atol + rtol * np.abs(ref))))
