"""Scaling sweeps: every implementation of the row-wise operations over a geometric range of
classes (at a fixed number of elements) or of rows (at a fixed number of classes).

A point of the sweep is one shape of :func:`~softmax_jax.bench._cases.row_cases`, timed by
:func:`~softmax_jax.bench._timing.run_case` like any case of ``softmax-jax bench``, so each
row of the result is a :class:`~softmax_jax.bench._timing.Result` with the swept value
``x`` added.  :func:`plot_sweep` draws time and the fraction of the reference bandwidth
against ``x`` on log–log axes, one line per implementation.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import sys
from collections.abc import Callable, Sequence

KINDS = ("rows", "classes")
DEFAULT_OPS = ("softmax", "log_softmax", "xent_int_fwd", "xent_int_fwd_bwd")
# The operations a sweep can time: those of ``row_cases`` (a command line can check ``--ops``
# against them before anything is timed).
ROW_OPS = ("softmax", "log_softmax", "xent_int_fwd", "xent_int_fwd_bwd", "xent_prob_fwd",
           "xent_prob_fwd_bwd")

# The full sweeps, and the small ones of ``quick``: (first exponent, last exponent, step) of
# the swept size, and the fixed size (elements N·C for "classes", classes C for "rows").
GRIDS = {
    ("classes", False): ((8, 17, 1), 1 << 22),
    ("classes", True): ((6, 12, 2), 1 << 16),
    ("rows", False): ((6, 14, 1), 1024),
    ("rows", True): ((4, 10, 2), 256),
}


def shapes(kind: str, *, quick: bool = False) -> list[tuple[int, int]]:
  """The ``[N, C]`` shapes of a sweep: ``C = 2^8 … 2^17`` with ``N·C = 2^22`` ("classes"),
  or ``N = 2^6 … 2^14`` with ``C = 1024`` ("rows"); ``quick`` takes four smaller points.

  Examples:
    >>> shapes("rows", quick=True)
    [(16, 256), (64, 256), (256, 256), (1024, 256)]
    >>> shapes("classes")[0], shapes("classes")[-1]
    ((16384, 256), (32, 131072))
  """
  if kind not in KINDS:
    raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
  (first, last, step), fixed = GRIDS[kind, quick]
  sizes = [1 << e for e in range(first, last + 1, step)]
  if kind == "classes":
    return [(max(1, fixed // c), c) for c in sizes]
  return [(n, fixed) for n in sizes]


def _context() -> dict:
  """The run's context (versions, backend, device...); a minimal one where the harness
  has no ``context()``."""
  try:
    from softmax_jax.bench._context import context
  except ImportError:
    context = None
  if context is not None:
    return context()
  import os
  import platform

  import jax
  import numpy as np
  import optax

  return {"backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
          "jax": jax.__version__, "jaxlib": getattr(jax.lib, "__version__", None) or "",
          "optax": optax.__version__, "numpy": np.__version__,
          "python": platform.python_version(), "cpu": platform.machine(),
          "cpu_count": os.cpu_count(), "argv": list(sys.argv)}


def sweep(kind: str, *, dtype: str = "float32", ops: Sequence[str] | None = None,
          reps: int = 7, quick: bool = False, progress: Callable | None = None,
          seed: int = 0) -> dict:
  """Times every implementation of ``ops`` at every shape of :func:`shapes`.

  Args:
    kind: ``"classes"`` (C grows, N·C fixed) or ``"rows"`` (N grows, C fixed).
    dtype: the logits' dtype.
    ops: row-wise operations of ``row_cases`` (default :data:`DEFAULT_OPS`).
    reps: timed calls per implementation and point.
    quick: four small points instead of the full range.
    progress: called as ``progress(i, n, case)`` before point-and-op ``i`` of ``n``.
    seed: the inputs' random key.

  Returns:
    A JSON-ready dict: ``kind``, ``x`` (what is swept), ``fixed``, ``dtype``, ``shapes``,
    ``copy_gbps`` (the elementwise-copy bandwidth measured first where the rows have no
    reference of their own size, else ``None``), ``context`` and
    ``rows`` (every :class:`Result` as a dict, with ``x`` the swept value).
  """
  import jax

  from softmax_jax.bench._cases import row_cases
  from softmax_jax.bench._timing import copy_bandwidth, run_case

  grid = shapes(kind, quick=quick)
  ops = tuple(DEFAULT_OPS if ops is None else ops)
  cases = []
  for n, c in grid:
    found = {k.op: k for k in row_cases(n, c, dtype)}
    unknown = [op for op in ops if op not in found]
    if unknown:
      raise ValueError(f"ops {unknown} are not row-wise operations; choose from "
                       f"{', '.join(found)}")
    cases += [(n if kind == "rows" else c, found[op]) for op in ops]
  options = inspect.signature(run_case).parameters
  # The same-bytes references are shared by the ops of one point and timed anew at the next,
  # beside its cases: a load that comes and goes during the sweep falls on both alike.
  memos: dict[int, dict] = {}
  # Without a reference of each case's own size, the rows' fractions are of one big copy.
  copy_gbps = None if "reference" in options else copy_bandwidth(reps=5, nbytes=256 << 20)
  key = jax.random.key(seed)
  rows = []
  for i, (x, case) in enumerate(cases):
    if progress is not None:
      progress(i, len(cases), case)
    for r in run_case(case, reps=reps, key=jax.random.fold_in(key, i), copy_gbps=copy_gbps,
                      **({"memo": memos.setdefault(x, {})} if "memo" in options else {})):
      rows.append({**dataclasses.asdict(r), "x": x})
  fixed = GRIDS[kind, quick][1]
  return {"kind": kind, "x": "classes" if kind == "classes" else "rows",
          "fixed": {"elements": fixed} if kind == "classes" else {"classes": fixed},
          "dtype": dtype, "quick": quick, "reps": reps, "shapes": [list(s) for s in grid],
          "copy_gbps": copy_gbps, "context": _context(), "rows": rows}


def fraction(row: dict) -> float | None:
  """The row's achieved bandwidth over its reference bandwidth (``None`` if not memory-bound
  or not measured)."""
  value = row.get("fraction_of_copy")
  if value is None and row.get("gbps") and row.get("ref_gbps"):
    value = row["gbps"] / row["ref_gbps"]
  return value if value is not None and math.isfinite(value) else None


def lines(data: dict) -> dict[str, dict[str, list[tuple[float, dict]]]]:
  """``{op: {impl: [(x, row), ...]}}`` of a sweep, in order of ``x``; failed rows left out."""
  out: dict[str, dict[str, list]] = {}
  for r in data["rows"]:
    if not (r.get("median_ms") or 0) > 0:  # NaN (failed) or missing
      continue
    out.setdefault(r["op"], {}).setdefault(r["impl"], []).append((r["x"], r))
  for impls in out.values():
    for pts in impls.values():
      pts.sort(key=lambda p: p[0])
  return out


def plot_sweep(data: dict, path) -> None:
  """One figure row per operation: time (ms) and fraction of the reference bandwidth
  against the swept size, log–log, one line per implementation; ``x`` marks a point that
  disagrees with its baseline."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
  by_op = lines(data)
  if not by_op:
    raise ValueError("the sweep has no timed rows to plot")
  fixed = ", ".join(f"{k} = {v:,}" for k, v in data.get("fixed", {}).items())
  ctx = data.get("context") or {}
  device = ctx.get("device") or ctx.get("device_kind") or "?"
  where = f"{ctx.get('backend', '?')} ({device})"
  fig, axes = plt.subplots(len(by_op), 2, figsize=(10, 2.6 * len(by_op) + 0.6), squeeze=False)
  xlabel = data.get("x", data.get("kind", "x"))
  for (op, impls), (ax_t, ax_f) in zip(by_op.items(), axes, strict=True):
    for j, (impl, pts) in enumerate(impls.items()):
      style = dict(color=f"C{j}", lw=2.0 if impl == "softmax_jax" else 1.2,
                   ls="-" if impl == "softmax_jax" else "--", marker="o", ms=3, label=impl)
      xs = [x for x, _ in pts]
      ax_t.plot(xs, [r["median_ms"] for _, r in pts], **style)
      ax_t.fill_between(xs, [r["p25_ms"] for _, r in pts], [r["p75_ms"] for _, r in pts],
                        color=f"C{j}", alpha=0.15, lw=0)
      fr = [(x, fraction(r)) for x, r in pts if fraction(r)]
      if fr:
        ax_f.plot(*zip(*fr, strict=True), **style)
      wrong = [(x, r["median_ms"]) for x, r in pts if not r.get("correct", True)]
      if wrong:
        ax_t.plot(*zip(*wrong, strict=True), "x", color="red", ms=8, label="disagrees")
    for ax in (ax_t, ax_f):
      ax.set_xscale("log", base=2)
      ax.set_yscale("log")
      ax.grid(True, which="both", lw=0.3, alpha=0.5)
      ax.set_xlabel(xlabel)
      ax.yaxis.set_major_locator(LogLocator(10, subs=(1.0, 2.0, 5.0)))
      ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
      ax.yaxis.set_minor_formatter(NullFormatter())
    ax_f.axhline(1.0, color="k", lw=0.6)
    ax_t.set_ylabel(f"{op}\nmedian ms (p25–p75)")
    ax_f.set_ylabel("fraction of reference GB/s")
    ax_t.legend(fontsize=7)
  fig.suptitle(f"{data.get('kind', '')} sweep, {data.get('dtype', '')}, {fixed}, on {where}",
               fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
