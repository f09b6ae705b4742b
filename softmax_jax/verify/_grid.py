"""The verification grid behind ``softmax-jax verify``: running it and summarising it.

Every row compares one derivative path (or value) of one function, for one
dtype, class count and logit scale (``softmax_jax.verify._cases``), with a float64
NumPy reference computed from the same rounded inputs
(``softmax_jax.verify._references``), under the bound of
``softmax_jax.verify._tolerances``: ``|got − ref| ≤ rtol·max(M, S)`` with ``S`` the
largest reference entry of the example (row), ``M`` the ``Σ|terms|`` behind
each entry where the check knows it (``softmax_jax.verify._magnitudes``), and
``rtol = c ε + 2 ε_acc √n`` with ``n`` the class count (1 for elementwise
functions).  Rows for ``jax.nn`` and optax on the same inputs are reported beside
ours; they never affect the exit status.

What each function's check compares is ``softmax_jax.verify._comparisons``; their
``got`` sides are evaluated together in one compiled program per check
(``softmax_jax.verify._evaluator``), so a check compiles once rather than once per
primitive, and grid points that differ only in the logit scale reuse it.
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np

from softmax_jax import _arguments
from softmax_jax._softmax import log_softmax, softmax
from softmax_jax.verify._cases import DENSE_MAX, NONFINITE_SCALES, Case, Point, make_case, points
from softmax_jax.verify._cases import FULL as FULL
from softmax_jax.verify._cases import QUICK as QUICK
from softmax_jax.verify._compare import compare, finite_abs
from softmax_jax.verify._comparisons import CHECKS as CHECKS
from softmax_jax.verify._comparisons import Comparison
from softmax_jax.verify._evaluator import Evaluator
from softmax_jax.verify._finite_differences import float64_enabled
from softmax_jax.verify._projections import first_order_checks
from softmax_jax.verify._tolerances import bound


@dataclasses.dataclass(frozen=True)
class Row:
  """One comparison: ``error`` (``|got − ref|`` where it is closest to its bound) against
  ``bound`` (``rtol·scale`` there), with the rule behind each."""

  function: str
  variant: str
  dtype: str
  classes: int
  scale: str
  method: str
  impl: str
  max_abs_err: float
  max_rel_err: float
  rtol: float
  atol: float
  status: str
  error: float = float("nan")
  bound: float = float("nan")
  bound_scale: float = float("nan")
  n: int = 0
  rule: str = ""        # where rtol comes from
  scale_rule: str = ""  # what the scale is


def run_case(dtype: str, classes: int, scale: str, functions=None,
             evaluate: Evaluator | None = None) -> list[Row]:
  """All rows of one grid point (``functions`` restricts to some of :data:`CHECKS`)."""
  if evaluate is None:
    with Evaluator() as evaluate:
      return run_case(dtype, classes, scale, functions, evaluate)
  rows = []
  with float64_enabled():
    case = make_case(dtype, classes, scale)
  with float64_enabled() if dtype == "float64" else contextlib.nullcontext():
    rows.extend(fast_rows(case, functions))
  with float64_enabled():
    for name, comparisons in CHECKS.items():
      if functions and name not in functions:
        continue
      try:
        rows.extend(_rows_of(list(comparisons(case)), evaluate(name, case), case))
      except Exception as err:  # noqa: BLE001 - a check that cannot run is a failed row
        nan = float("nan")
        rows.append(Row(name, _arguments.error_line(err, 120), case.dtype, case.classes,
                        case.scale, "error", "softmax_jax", nan, nan, nan, nan, "FAIL"))
  return rows


FAST_FUNCTIONS = {"softmax": softmax, "log_softmax": log_softmax}  # by projections, large C


def fast_rows(case: Case, functions=None) -> list[Row]:
  """Above :data:`~softmax_jax.verify._cases.DENSE_MAX` classes, where a Jacobian would not
  fit, the forward and reverse modes of softmax and log_softmax against float64 central
  differences and each other by random projections
  (:func:`softmax_jax.verify._projections.first_order_checks`, fast mode), at the points
  with finite logits."""
  if case.classes <= DENSE_MAX or case.scale in NONFINITE_SCALES:
    return []
  rows = []
  for name, fn in FAST_FUNCTIONS.items():
    if functions and name not in functions:
      continue
    for c in first_order_checks(fn, (case.x,), fast=True).checks:
      if c.passed is None:
        continue
      rows.append(Row(name, "projections", case.dtype, case.classes, case.scale,
                      f"{c.mode}~{c.reference}", "softmax_jax", c.max_abs_err, c.max_rel_err,
                      float("nan"), float("nan"), "ok" if c.passed else "FAIL", c.error,
                      c.bound, float("nan"), case.classes, c.bound_rule, c.where))
  return rows


def _example_scale(want: np.ndarray) -> np.ndarray:
  """``S``: ``max|ref|`` over each example (row) of a result with a class axis, over the
  whole result otherwise."""
  a = finite_abs(want)
  if a.ndim < 2:
    return np.full(a.shape, a.max(initial=0.0))
  return np.broadcast_to(a.max(axis=tuple(range(1, a.ndim)), keepdims=True), a.shape)


def _rows_of(comparisons: list[Comparison], gots: list, case: Case) -> list[Row]:
  """The rows of one check at one grid point: each comparison against its bound."""
  rows = []
  for cmp, got in zip(comparisons, gots, strict=True):
    if cmp.finite_only and case.scale in NONFINITE_SCALES:
      continue
    extra = None
    if cmp.method == "fd":
      got, error = got
      extra = 2 * np.asarray(error)
    want = np.asarray(cmp.want(), np.float64)
    b = bound(case.dtype, cmp.n or case.classes, fd=(cmp.method == "fd"))
    magnitude = None if cmp.magnitude is None else cmp.magnitude()
    scale_rule = ("max|ref| of the example" if magnitude is None
                  else "max(Σ|terms|, max|ref| of the example)")
    err = compare(np.asarray(got), want, cmp.method, bound=b, magnitude=magnitude,
                  scale=_example_scale(want), extra_atol=extra, scale_rule=scale_rule)
    if cmp.impl == "softmax_jax":
      status = "ok" if err.passed else "FAIL"
    else:
      status = "(within)" if err.passed else "(beyond)"
    rows.append(Row(cmp.function, cmp.variant, case.dtype, case.classes, case.scale, cmp.method,
                    cmp.impl, err.max_abs_err, err.max_rel_err, b.rtol, b.atol, status,
                    err.error, err.allowed, err.scale, b.n, b.rule, scale_rule))
  return rows


def run(spec: dict, functions=None, progress=None) -> list[Row]:
  """Runs the grid ``spec`` (see :data:`FULL`, :data:`QUICK`); ``progress(i, n, point)``
  with ``point`` a :class:`~softmax_jax.verify._cases.Point`."""
  grid: list[Point] = list(points(spec))
  names = [name for name in CHECKS if not functions or name in functions]
  rows: list[Row] = []
  with Evaluator() as evaluate:
    with float64_enabled():
      for point in grid:  # trace every program first; they compile while the grid runs
        case = make_case(*point)
        for name in names:
          evaluate.prepare(name, case)
    for i, point in enumerate(grid):
      if progress is not None:
        progress(i, len(grid), point)
      rows.extend(run_case(*point, functions=functions, evaluate=evaluate))
  return rows


HEADER = ("function", "variant", "dtype", "C", "scale", "method", "impl", "max abs err",
          "max rel err", "error", "≤ bound", "= rtol", "× scale", "status")


def format_table(rows: list[Row]) -> str:
  """One line per row: the error where it is closest to its bound, the bound there
  (``rtol × scale``), and the largest absolute and relative errors; then the
  :func:`legend` of the bound."""
  body = [(r.function, r.variant or "-", r.dtype, str(r.classes), r.scale, r.method, r.impl,
           f"{r.max_abs_err:.2e}", f"{r.max_rel_err:.2e}", f"{r.error:.2e}", f"{r.bound:.2e}",
           f"{r.rtol:.1e}", f"{r.bound_scale:.1e}", r.status)
          for r in rows]
  widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
            for i, h in enumerate(HEADER)]
  line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
  return "\n".join([line(HEADER), line(["-" * w for w in widths]), *map(line, body), legend()])


def legend() -> str:
  """What the table's bound columns mean."""
  return ("error: |got − ref| at the entry closest to its bound; bound = rtol × scale there; "
          "rtol = cε + 2ε_acc√n (c = 16 for float64/float32, 4 for bfloat16/float16, summed in "
          "float32; n = C, 1 for elementwise functions; at least 1000ε₆₄^(2/3) for fd, plus its "
          "error estimate); scale = max(Σ|terms| behind the entry, max|ref| of the example); plus "
          "c·tiny for results below the dtype's range; 'projections' rows (C > 1000, finite "
          "logits): fwd/rev against float64 differences and each other through random uᵀJv, "
          "their bound rule in the JSON")


def summary(rows: list[Row]) -> str:
  """The last line of ``softmax-jax verify``: our rows passed and failed, and how many
  ``jax.nn`` / optax rows lie beyond the bound ours are held to."""
  ours = [r for r in rows if r.impl == "softmax_jax"]
  failed = [r for r in ours if r.status == "FAIL"]
  base = [r for r in rows if r.impl != "softmax_jax"]
  beyond = sum(r.status == "(beyond)" for r in base)
  return (f"{len(ours) - len(failed)} passed, {len(failed)} failed "
          f"(softmax_jax rows; jax.nn/optax beyond their bound on {beyond} of {len(base)} rows)")
