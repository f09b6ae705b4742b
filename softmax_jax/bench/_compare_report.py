"""A comparison of benchmark runs as a text table, Markdown and a plot (matplotlib is
imported when it draws)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
  from softmax_jax.bench._compare import Comparison, Entry

# Context entries named in the header when every run has the same.
SUMMARY = ("backend", "device", "device_kind", "jax", "versions.jax", "machine")


def header(cmp: Comparison) -> list[str]:
  """The runs, their context (what is the same, what differs), the rule and the drift."""
  out = [f"baseline: {cmp.names[0]}; compared: {', '.join(cmp.names[1:])}"]
  same = {k: v for k, v in cmp.contexts[0].items() if k in SUMMARY
          and all(x.get(k) == v for x in cmp.contexts)}
  if same:
    out.append("same in every run: " + ", ".join(f"{k} {v}" for k, v in same.items()))
  for k, vals in cmp.differences:
    out.append(f"differs: {k}: " + " | ".join(_short(vals)))
  if cmp.relative:
    out.append("times relative to each case's baseline implementation in the same run")
  out.append(f"ratio = median / median of {cmp.names[0]}; beyond spread when the "
             f"[p25, p75] intervals (each at least ±{cmp.noise:.0%} of its median) do not "
             f"overlap; gated ({', '.join(cmp.gate)}) cases regress when slower beyond "
             f"spread and the ratio > {cmp.threshold:g}")
  drift = cmp.baseline_drift
  if drift:
    out.append("the baseline implementations (jax.nn, optax...) took "
               + ", ".join(f"{d:.2f}x in {n}" for n, d in drift.items())
               + f" their time in {cmp.names[0]} (median)"
               + ("" if cmp.relative else ": the machine's speed differs where far from 1 "
                  "(--relative cancels it)"))
  if cmp.not_in_baseline:
    out.append(f"{cmp.not_in_baseline} cases of later runs are not in {cmp.names[0]} "
               "and are left out")
  return out


def _cells(cmp: Comparison) -> tuple[list[str], list[list[str]]]:
  """The table's column names and cells (``*`` after a gated case's impl)."""
  unit = "rel" if cmp.relative else "ms"
  cols = ["op", "impl", "shape", "dtype", f"{cmp.names[0]} {unit}"]
  for name in cmp.names[1:]:
    cols += [f"{name} {unit}", "ratio", "verdict"]
  body = []
  for ln in cmp.lines:
    cells = [ln.op, ln.label + (" *" if ln.gated else ""), ln.shape, ln.dtype,
             _ms(ln.entries[0])]
    for k in range(1, len(cmp.names)):
      ratio = ln.ratios[k]
      cells += [_ms(ln.entries[k]), "-" if ratio is None else f"{ratio:.2f}",
                ln.verdicts[k]]
    body.append(cells)
  return cols, body


def text(cmp: Comparison) -> str:
  """The comparison as an aligned plain-text table (``*``: a gated case)."""
  cols, body = _cells(cmp)
  widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(cols)]
  fmt = lambda cs: "  ".join(c.ljust(w) for c, w in zip(cs, widths, strict=True))  # noqa: E731
  return "\n".join([*header(cmp), "", fmt(cols), *map(fmt, body)])


def markdown(cmp: Comparison) -> str:
  """The comparison as Markdown: the header as a list, then the table."""
  cols, body = _cells(cmp)
  rows = ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in body]
  return "\n".join([*(f"* {h}" for h in header(cmp)), "", "| " + " | ".join(cols) + " |",
                    "|" + "---|" * len(cols), *rows])


def _short(values: list[str], width: int = 60) -> list[str]:
  """``values`` without the long prefix they share, each cut to ``width`` characters."""
  cut = len(os.path.commonprefix(values))
  cut = cut - 10 if cut > 20 else 0
  out = []
  for v in values:
    v = ("…" if cut else "") + v[cut:]
    out.append(v if len(v) <= width else v[:width - 1] + "…")
  return out


def _ms(entry: Entry | None) -> str:
  if entry is None:
    return "-"
  return "failed" if entry.failed else f"{entry.median_ms:.3f}"


def plot(cmp: Comparison, path) -> None:
  """Each case's ratio to the baseline (log scale), one marker per later run, with the ratio
  of the runs' intervals as a bar; a regressed case is drawn in red."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

  lines = [ln for ln in cmp.lines if any(r is not None for r in ln.ratios)]
  if not lines:
    raise ValueError("no case was timed in the baseline and a later run")
  fig, ax = plt.subplots(figsize=(9, 1.2 + 0.22 * len(lines)))
  later = cmp.names[1:]
  step = 0.6 / max(1, len(later))
  for k, name in enumerate(later, start=1):
    for y, ln in enumerate(lines):
      ratio, a, b = ln.ratios[k], ln.entries[0], ln.entries[k]
      if ratio is None:
        continue
      yk = y + (k - 1 - (len(later) - 1) / 2) * step
      lo, hi = b.low / a.high, b.high / a.low
      bad = ln.verdicts[k] == "REGRESSED"
      ax.plot([lo, hi], [yk, yk], color=f"C{k - 1}", lw=1.0, alpha=0.6)
      ax.plot([ratio], [yk], "o", color=f"C{k - 1}", ms=4, label=name)
      if bad:
        ax.plot([ratio], [yk], "o", mfc="none", mec="red", ms=9, mew=1.5, label="regressed")
  ax.set_yticks(range(len(lines)),
                [f"{ln.op} {ln.label}{' *' if ln.gated else ''} {ln.shape} {ln.dtype}"
                 for ln in lines], fontsize=6)
  ax.invert_yaxis()
  ax.set_xscale("log")
  ax.xaxis.set_major_locator(LogLocator(10, subs=(1.0, 2.0, 5.0)))
  ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
  ax.xaxis.set_minor_formatter(NullFormatter())
  ax.axvline(1.0, color="k", lw=0.7)
  ax.axvline(cmp.threshold, color="red", lw=0.7, ls="--",
             label=f"threshold {cmp.threshold:g}")
  ax.set_xlabel(f"median / median of {cmp.names[0]} (bar: the runs' intervals)")
  ax.grid(True, axis="x", which="both", lw=0.3, alpha=0.5)
  handles, labels = ax.get_legend_handles_labels()
  seen = dict(zip(labels, handles, strict=True))
  ax.legend(seen.values(), seen.keys(), fontsize=7, loc="best")
  ax.set_title("* gated; red: regressed", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
