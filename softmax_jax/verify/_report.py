"""What :func:`softmax_jax.verify.check_derivatives` reports: one :class:`Check` per mode
compared with one reference, and the :class:`DerivativeReport` that gathers them.

A :class:`Check` says which derivative was under test (``mode``), what it was compared with
(``reference``), the worst element (``where``: leaf path and index, or the projection), the
largest absolute and relative errors, the error and bound at the worst element (the one
furthest beyond, or closest to, its bound) and why that bound (``bound_rule``: dtype,
scale of the derivative, length of the reductions).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import NamedTuple

import numpy as np


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
  error: float = float("nan")  # |got − ref| at the worst element, the one `bound` is for

  @property
  def status(self) -> str:
    """``"ok"``, ``"FAIL"`` or ``"unavailable"``."""
    return "unavailable" if self.passed is None else ("ok" if self.passed else "FAIL")

  @property
  def name(self) -> str:
    """``"mode vs reference"``, the key of the check in a report."""
    return f"{self.mode} vs {self.reference}"

  def to_json(self) -> dict:
    return dict(self._asdict())


def _finite_or_none(value):
  """JSON has no NaN or infinity: those become ``None``; NumPy scalars become Python ones."""
  if isinstance(value, bool | str) or value is None:
    return value
  if isinstance(value, int | float | np.number):
    value = float(value) if isinstance(value, float | np.floating) else int(value)
    return value if not isinstance(value, float) or math.isfinite(value) else None
  return value


def _number(value: float) -> str:
  return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else (
      f"{value:.2e}")


@dataclasses.dataclass(frozen=True)
class DerivativeReport:
  """Every check of one :func:`~softmax_jax.verify.check_derivatives` call.

  ``passed`` is ``True`` when every available check passed and at least one ran;
  ``str(report)`` is a table, one row per check; ``to_json()`` a dict of plain values.
  ``jacobian_errors`` holds ``|got − ref|`` per Jacobian element (outputs × inputs)
  keyed ``"mode vs reference"`` when the full Jacobians were built (not in fast mode),
  for :meth:`plot`.
  """

  function: str
  inputs: str
  order: int
  fast: bool | None
  checks: tuple[Check, ...]
  jacobian_errors: dict | None = None

  @property
  def passed(self) -> bool:
    ran = [c for c in self.checks if c.passed is not None]
    return bool(ran) and all(c.passed for c in ran)

  def failures(self) -> list[Check]:
    """The checks that ran and failed."""
    return [c for c in self.checks if c.passed is False]

  def unavailable(self) -> list[Check]:
    """The checks of modes JAX refused for this function (``passed is None``)."""
    return [c for c in self.checks if c.passed is None]

  def __getitem__(self, name: str) -> Check:
    """The check named ``"mode vs reference"``."""
    for c in self.checks:
      if c.name == name:
        return c
    raise KeyError(f"no check {name!r}; the checks are {[c.name for c in self.checks]}")

  def summary(self) -> str:
    ran = [c for c in self.checks if c.passed is not None]
    verdict = "PASSED" if self.passed else "FAILED"
    if not ran:
      verdict += " (no check could run)"
    parts = [f"{len(ran)} checks ran", f"{len(self.failures())} failed"]
    if self.unavailable():
      parts.append(f"{len(self.unavailable())} unavailable")
    mode = {None: "", True: ", fast mode (random projections)",
            False: ", full Jacobians"}[self.fast]
    return (f"check_derivatives({self.function}) at {self.inputs}, order {self.order}{mode}: "
            f"{verdict} ({', '.join(parts)})")

  def __str__(self) -> str:
    header = ("status", "mode", "reference", "worst element", "max abs", "max rel", "bound",
              "bound rule / note")
    rows = [(c.status, c.mode, c.reference, c.where or "—", _number(c.max_abs_err),
             _number(c.max_rel_err), _number(c.bound),
             c.bound_rule + (f" [{c.note}]" if c.note and c.bound_rule else c.note))
            for c in self.checks]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]

    def line(r):
      return "  " + "  ".join(f"{v:<{w}}" for v, w in zip(r, widths, strict=False)) + "  " + r[-1]

    return "\n".join([self.summary(), line(header), *(line(r) for r in rows)])

  def to_json(self) -> dict:
    """The report as plain JSON values (NaN and infinity as ``null``)."""
    return {"function": self.function, "inputs": self.inputs, "order": self.order,
            "fast": self.fast, "passed": self.passed,
            "checks": [{k: _finite_or_none(v) for k, v in c.to_json().items()}
                       for c in self.checks]}

  def save_json(self, path) -> None:
    """Writes :meth:`to_json` to ``path``."""
    with open(path, "w", encoding="utf-8") as f:
      json.dump(self.to_json(), f, indent=1, ensure_ascii=False)
      f.write("\n")

  def plot(self, path) -> None:
    """Saves a heat map of ``|got − ref| / bound`` per Jacobian element (outputs × inputs),
    one panel per full-Jacobian check, to ``path`` (any format matplotlib writes).

    ``bound`` is the check's bound at its worst element, so a value above 1 is an element
    at least as far off as the one that decided the check.  Needs matplotlib and a report
    made with full Jacobians (``check_derivatives(..., fast=False)``).
    """
    if not self.jacobian_errors:
      raise ValueError("plot: this report has no full Jacobians (fast mode); run "
                       "check_derivatives(..., fast=False) for a picture of the error.")
    try:
      from matplotlib.colors import LogNorm
      from matplotlib.figure import Figure
    except ImportError as error:
      raise ImportError("plot: needs matplotlib (pip install matplotlib).") from error
    items = list(self.jacobian_errors.items())
    fig = Figure(figsize=(4.5 * len(items), 4.0), layout="constrained")
    for i, (name, errors) in enumerate(items):
      ax = fig.add_subplot(1, len(items), i + 1)
      check = next((c for c in self.checks if c.name == name), None)
      allowed = check.bound if check is not None and check.bound and check.bound > 0 else None
      values = np.asarray(errors, np.float64)
      values = values.reshape(values.shape[0], -1) if values.ndim != 1 else values[None, :]
      shown = values / allowed if allowed else values
      positive = shown[np.isfinite(shown) & (shown > 0)]
      norm = None
      if positive.size:  # a log scale: errors span decades; 1 is the bound
        top = max(float(positive.max()), 1.0)
        norm = LogNorm(vmin=max(float(positive.min()), 1e-6 * top), vmax=top)
        shown = np.clip(np.where(np.isfinite(shown), shown, top), norm.vmin, None)
      image = ax.imshow(shown, aspect="auto", interpolation="nearest", cmap="magma", norm=norm)
      fig.colorbar(image, ax=ax, label="|error| / bound" if allowed else "|error|")
      status = f" ({check.status})" if check is not None else ""
      ax.set_title(f"{name}{status}")
      ax.set_xlabel("input element (flattened args)")
      ax.set_ylabel("output element (flattened)")
    fig.suptitle(self.summary().split(":")[0])
    fig.savefig(path)
