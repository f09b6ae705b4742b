"""What :func:`softmax_jax.verify.check_derivatives` reports: one :class:`Check` per mode
compared with one reference, and the report that gathers them.

A :class:`Check` says which derivative was under test (``mode``), what it was compared with
(``reference``), the worst element (``where``: leaf path and index, or the projection), the
largest absolute and relative errors, the bound at the worst element and why that bound
(``bound_rule``: dtype, scale of the derivative, length of the reductions).
"""

from __future__ import annotations

from typing import NamedTuple


class Check(NamedTuple):
  """One mode of a derivative against one reference.

  ``passed`` is ``None`` when the mode is unavailable for the function (a ``custom_vjp``
  function has no forward mode, say); ``note`` then says why.
  """

  mode: str          # "fwd", "rev", "vmap(fwd)", "vmap(rev)", "jit", "fwd-over-rev", ...
  reference: str     # "fd" (float64 central differences), "rev" (dot-product test), ...
  passed: bool | None
  max_abs_err: float
  max_rel_err: float
  bound: float       # the allowed error at the worst element
  bound_rule: str    # why that bound
  where: str         # the worst element: "[1]['w'][3, 7]", or "projection 2 on ['w']"
  note: str = ""

  def to_json(self) -> dict:
    return dict(self._asdict())
