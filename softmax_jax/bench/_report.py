"""The benchmark's results as a text table, Markdown, CSV and a plot."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from softmax_jax.bench._timing import Result

COLUMNS = ("op", "impl", "shape", "dtype", "median_ms", "p25_ms", "p75_ms", "compile_ms",
           "gbps", "ref_gbps", "fraction_of_copy", "fraction_of_matmul", "temp_bytes", "speedup",
           "correct")
# The shorter table of a sweep (each line is preceded by the swept value).
SWEEP_COLUMNS = ("op", "impl", "shape", "dtype", "median_ms", "compile_ms", "gbps",
                 "fraction_of_copy", "speedup", "correct")


def _cell(value, key) -> str:
  """One cell of a table: ``value`` of column ``key`` formatted, ``-`` where there is none."""
  if value is None or value != value:  # None or NaN (a row that failed)
    return "-"
  if key in ("median_ms", "p25_ms", "p75_ms"):
    return f"{value:.3f}"
  if key in ("compile_ms", "first_call_ms"):
    return f"{value:.0f}"
  if key in ("gbps", "ref_gbps", "gflops", "ref_gflops"):
    return f"{value:.1f}"
  if key in ("fraction_of_copy", "fraction_of_matmul", "speedup"):
    return f"{value:.2f}"
  if key == "temp_bytes":
    return f"{value / 1e6:.1f} MB"
  if key == "correct":
    return "yes" if value else "WRONG"
  return str(value)


def status(r: Result) -> str:
  """``yes``, ``WRONG`` (disagrees with its baseline) or the failure (did not compile or run)."""
  if r.failed:
    return r.note.replace("|", "/")
  return _cell(r.correct, "correct")


def markdown(rows: Sequence[Result], copy_gbps: float | None) -> str:
  """The rows as a Markdown table, headed by the device and the large-array copy bandwidth.

  ``ref GB/s`` is each row's own roofline (the copy of its bytes and dtype), ``of copy``
  its GB/s over that, ``of matmul`` its FLOP rate over the plain matmul of its shape.
  """
  head = ["| op | impl | shape | dtype | median ms | spread (p25–p75) ms | compile ms | GB/s | "
          "ref GB/s | of copy | of matmul | temp | speedup vs baseline | agrees |",
          "|" + "---|" * 14]
  body = [f"| {r.op} | {r.impl} | {r.shape} | {r.dtype} | {_cell(r.median_ms, 'median_ms')} | "
          f"{_cell(r.p25_ms, 'p25_ms')}–{_cell(r.p75_ms, 'p75_ms')} | "
          f"{_cell(r.compile_ms, 'compile_ms')} | {_cell(r.gbps, 'gbps')} | "
          f"{_cell(r.ref_gbps, 'ref_gbps')} | {_cell(r.fraction_of_copy, 'fraction_of_copy')} | "
          f"{_cell(r.fraction_of_matmul, 'fraction_of_matmul')} | "
          f"{_cell(r.temp_bytes, 'temp_bytes')} | {_cell(r.speedup, 'speedup')} | {status(r)} |"
          for r in rows]
  dev = f"{rows[0].backend} ({rows[0].device})" if rows else "?"
  copy = f"{copy_gbps:.1f} GB/s" if copy_gbps else "not measured"
  # rows written before the per-case references have their fraction over the large copy
  over = ("context; each row's `of copy` is over its own `ref GB/s`"
          if any(r.ref_gbps is not None for r in rows) else "`of copy` is over it")
  return "\n".join([f"Device: {dev}. Elementwise-copy bandwidth of a 256 MiB array in this run "
                    f"({over}): {copy}.", "", *head, *body])


def text_table(rows: Sequence[Result], columns: Sequence[str] = COLUMNS) -> str:
  """The rows as an aligned plain-text table of ``columns`` (what the command prints)."""
  cells = [[status(r)[:40] if k == "correct" else _cell(getattr(r, k), k) for k in columns]
           for r in rows]
  widths = [max(len(k), *(len(c[i]) for c in cells)) if cells else len(k)
            for i, k in enumerate(columns)]
  fmt = lambda cs: "  ".join(c.rjust(w) for c, w in zip(cs, widths, strict=True))  # noqa: E731
  return "\n".join([fmt(columns), *map(fmt, cells)])


def write_csv(rows: Sequence[Result], path) -> None:
  """Every field of every row, one line per row, with a header."""
  import csv

  with open(path, "w", newline="") as fh:
    writer = csv.DictWriter(fh, fieldnames=[f.name for f in dataclasses.fields(Result)])
    writer.writeheader()
    for r in rows:
      writer.writerow(dataclasses.asdict(r))


def plot(rows: Sequence[Result], path) -> None:
  """Bar chart of the fraction of the same-bytes copy's bandwidth per op, one bar group per
  backend."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  mem = [r for r in rows if r.fraction_of_copy is not None]
  labels = sorted({f"{r.op}\n{r.shape} {r.dtype}" for r in mem})
  series = sorted({(r.backend, r.impl) for r in mem})
  fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels)), 4))
  width = 0.8 / max(1, len(series))
  for s, (backend, impl) in enumerate(series):
    vals = []
    for label in labels:
      hits = [r.fraction_of_copy for r in mem if (r.backend, r.impl) == (backend, impl)
              and f"{r.op}\n{r.shape} {r.dtype}" == label]
      vals.append(max(hits) if hits else 0.0)
    ax.bar(np.arange(len(labels)) + s * width, vals, width, label=f"{impl} ({backend})")
  ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels, fontsize=6, rotation=60,
                ha="right")
  ax.set_ylabel("fraction of the same-bytes copy's bandwidth")
  ax.axhline(1.0, color="k", lw=0.5)
  ax.legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
