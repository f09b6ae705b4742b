"""Builds docs/benchmarks.md (and its plot) from one or more `softmax-jax bench --json` files.

    softmax-jax bench --json cpu.json
    python experiments/backend_benchmark.py cpu.json [gpu.json ...] [--runs cpu2.json cpu3.json]

Rows from several backends are merged into one document; the targets of the
benchmark issue are checked on each file's own ratios (each measured in one run).
``--runs`` takes further runs of the first file's command, made one after the
other on the same machine: the CPU targets are then tabulated over every run,
and a target counts as met only if every run meets it.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from softmax_jax import bench

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"


def _find(rows, op, shape=None, dtype="float32", impl="softmax_jax", baseline=None):
  for r in rows:
    if (r["op"] == op and r["impl"] == impl and (shape is None or r["shape"] == shape)
        and r["dtype"] == dtype and (baseline is None or r["baseline"] == baseline)):
      return r
  return None


def cpu_targets(rows) -> list[tuple[str, str, str, bool | None]]:
  """(what, target, measured, met) for the CPU figures of the benchmark issue."""
  out = []
  # a row without a speedup did not run (its note says why): it counts as a miss
  rows = [dict(r, speedup=0.0) if r["impl"] == "softmax_jax" and r.get("speedup") is None
          and bench.is_failure(r.get("note", "")) else r for r in rows]

  def add(what, target, value, ok):
    out.append((what, target, "not in this run" if value is None else value,
                None if value is None else ok))

  for op, what in (("xent_int_fwd", "cross_entropy_with_integer_labels forward"),
                   ("xent_int_fwd_bwd", "cross_entropy_with_integer_labels value+grad"),
                   ("xent_prob_fwd", "cross_entropy forward"),
                   ("xent_prob_fwd_bwd", "cross_entropy value+grad")):
    for r in rows:
      if r["op"] == op and r["impl"] == "softmax_jax" and r["baseline"] == "optax":
        add(f"{what} vs optax, {r['shape']} {r['dtype']}", "≥ 1.0×", f"{r['speedup']:.2f}×",
            r["speedup"] >= 1.0)
  for base, target in (("vmap(jacfwd)", 5.0), ("vmap(jacrev)", 2.0)):
    r = _find(rows, "softmax_jacobian", "256x128", baseline=base)
    add(f"softmax_jacobian vs {base}, 256x128", f"≥ {target:g}×",
        None if r is None else f"{r['speedup']:.2f}×", r is not None and r["speedup"] >= target)
  r = _find(rows, "softmax_jacobian", "256x128", baseline="closed form y(I − y)")
  add("softmax_jacobian vs the closed form y(I − y), 256x128", "≥ 1.0×",
      None if r is None else f"{r['speedup']:.2f}×", r is not None and r["speedup"] >= 1.0)
  r = _find(rows, "softmax_jacobian", "256x128", baseline="outer-product write")
  add("softmax_jacobian time / outer-product write time, 256x128", "≤ 1.25",
      None if r is None else f"{1 / r['speedup']:.2f}", r is not None and 1 / r["speedup"] <= 1.25)
  r = _find(rows, "softmax_vjp")
  add(f"softmax_vjp vs dense J @ v, {r['shape'] if r else '?'}", "≥ 100×",
      None if r is None else f"{r['speedup']:.0f}×", r is not None and r["speedup"] >= 100)
  for r in rows:
    if r["op"] == "softmax" and r["impl"] == "softmax_jax":
      add(f"softmax vs jax.nn.softmax, {r['shape']} {r['dtype']}", "≥ 0.9×",
          f"{r['speedup']:.2f}×", r["speedup"] >= 0.9)
  return out


def render(runs: list[dict]) -> str:
  lines = ["# Benchmarks", "",
           "Produced by `softmax-jax bench --json` and `experiments/backend_benchmark.py`. Every "
           "ratio compares two implementations timed alternately in the same process, so a noisy "
           "machine still gives a fair comparison; absolute times mean something only on a GPU or "
           "TPU with the card named. Bytes count each input read once and each output written "
           "once; `of copy` is that bandwidth over the elementwise-copy bandwidth measured in the "
           "same run. `temp` is the compiled executable's `memory_analysis()` temporary size.", ""]
  for run in runs:
    rows = [bench.Result(**r) for r in run["rows"]]
    dev = f"{rows[0].backend}, {rows[0].device}" if rows else "?"
    lines += [f"## {run.get('label', dev.upper() if dev.startswith('cpu') else dev)}", ""]
    if run.get("machine"):
      lines += [run["machine"], ""]
    if rows and rows[0].backend == "cpu":
      lines += ["### The CPU targets", "", "| figure | target | measured | met |",
                "|---|---|---|---|"]
      for what, target, value, ok in cpu_targets(run["rows"]):
        met = "-" if ok is None else "yes" if ok else "no"
        lines.append(f"| {what} | {target} | {value} | {met} |")
      lines.append("")
    lines += ["### All rows", "", bench.markdown(rows, run.get("copy_gbps")), ""]
  return "\n".join(lines)


def runs_table(runs: list[dict]) -> str:
  """The CPU targets of several runs of one command, side by side."""
  tables = [cpu_targets(run["rows"]) for run in runs]
  n = len(tables)
  lines = [f"## The CPU targets over {n} consecutive runs", "",
           f"The same command {n} times in a row on the same machine (run 1 is the first "
           "table above). A target counts as met only if every run meets it.", "",
           "| figure | target | " + " | ".join(f"run {i + 1}" for i in range(n))
           + " | met in all |", "|---|---|" + "---|" * n + "---|"]
  for i, (what, target, _, _) in enumerate(tables[0]):
    cells = [t[i] for t in tables if i < len(t) and t[i][0] == what]
    if len(cells) != n:
      raise ValueError(f"runs disagree on the figures: {what!r} is not in every run")
    met = [c[3] for c in cells]
    verdict = "-" if any(m is None for m in met) else "yes" if all(met) else "no"
    lines.append(f"| {what} | {target} | " + " | ".join(c[2] for c in cells) + f" | {verdict} |")
  return "\n".join(lines) + "\n"


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("json", nargs="+", type=pathlib.Path)
  parser.add_argument("--out", type=pathlib.Path, default=DOCS / "benchmarks.md")
  parser.add_argument("--plot", type=pathlib.Path, default=DOCS / "benchmarks.png")
  parser.add_argument("--notes", type=pathlib.Path, help="markdown appended after the tables")
  parser.add_argument("--runs", nargs="*", type=pathlib.Path, default=[],
                      help="more CPU runs of the first file's command, tabulated with it")
  args = parser.parse_args()
  runs = [json.loads(p.read_text()) for p in args.json]
  text = render(runs)
  if args.runs:
    text += "\n" + runs_table([runs[0], *(json.loads(p.read_text()) for p in args.runs)])
  if args.notes:
    text += "\n" + args.notes.read_text()
  args.out.write_text(text)
  if args.plot:
    bench.plot([bench.Result(**r) for run in runs for r in run["rows"]], args.plot)
  print(f"wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))
  return 0


if __name__ == "__main__":
  sys.exit(main())
