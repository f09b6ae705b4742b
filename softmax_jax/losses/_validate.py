"""Host-side label check, ``validate_labels``: where data enters a program.

Inside ``jit`` an out-of-range label can only make the loss NaN (never a clamped
value); this check runs in NumPy before any tracing and names the offending entries.
"""

from __future__ import annotations

import numpy as np

from softmax_jax import _arguments


def validate_labels(labels, num_classes: int, *, ignore_index: int | None = None,
                    max_listed: int = 10) -> np.ndarray:
  """Checks integer labels on the host and raises ``ValueError`` listing bad positions.

  Use it where data enters a program: inside ``jit`` an out-of-range label
  can only make the loss NaN, while this names the offending entries.

  Args:
    labels: integer class indices (any array-like, any shape).
    num_classes: ``C``; valid labels are ``0 ≤ label < C``.
    ignore_index: a value that is allowed besides the valid labels.
    max_listed: how many offending positions the message lists.

  Returns:
    The labels as a NumPy array, unchanged, when they are valid.

  Examples:
    >>> from softmax_jax import validate_labels
    >>> validate_labels([0, 2, 1], 3)
    array([0, 2, 1])
  """
  arr = np.asarray(labels)
  if not np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
    raise TypeError(f"validate_labels: labels must be integers, got dtype {arr.dtype}.")
  if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
    raise ValueError(f"validate_labels: num_classes must be a positive int, got {num_classes!r}.")
  ignore_index = _arguments.ignore_index(ignore_index, arr.dtype, "validate_labels")
  bad = (arr < 0) | (arr >= num_classes)
  if ignore_index is not None:
    bad &= arr != ignore_index
  if bad.any():
    positions = np.argwhere(bad)
    listed = ", ".join(
        f"labels[{', '.join(map(str, p))}] = {arr[tuple(p)]}" for p in positions[:max_listed]
    )
    more = f" and {len(positions) - max_listed} more" if len(positions) > max_listed else ""
    allowed = f"[0, {num_classes})" + ("" if ignore_index is None else f" or {ignore_index}")
    raise ValueError(
        f"validate_labels: {len(positions)} label(s) outside {allowed}: {listed}{more}."
    )
  return arr
