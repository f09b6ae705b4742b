"""Builds docs/benchmarks.md (and its plot) from one or more `softmax-jax bench --json` files.

    softmax-jax bench --json cpu.json
    python experiments/backend_benchmark.py cpu.json [gpu.json ...] [--runs cpu2.json cpu3.json] \
        [--notes experiments/benchmarks_notes.md experiments/benchmarks_sweeps.md]

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


READING = [
    "Produced by `softmax-jax bench --json` and `experiments/backend_benchmark.py`. Every "
    "ratio compares two implementations timed alternately in the same process, so a noisy "
    "machine still gives a fair comparison; absolute times mean something only on a GPU or "
    "TPU with the card named. `temp` is the compiled executable's `memory_analysis()` "
    "temporary size. `softmax-jax bench --quick` times a small grid (softmax, integer-label "
    "value+grad, the Jacobian and the linear loss at small shapes, 5 repetitions) in under "
    "30 s on a 2-core CPU, compilations included; `--sweep rows` or `--sweep classes` times "
    "the operations along one dimension.", "",
    "* **`GB/s`, `ref GB/s` and `of copy`.** Bytes count each input read once and each "
    "output written once. `ref GB/s` is the bandwidth of an elementwise copy "
    "`a * (1 + eps)` of the case's dtype that reads and writes the same number of bytes, "
    "its buffers rotating the same way (so it sits in cache exactly when the case's inputs "
    "do), timed in the same run between the case's own blocks of repetitions. `of copy` is "
    "`GB/s / ref GB/s`: about 1 means the operation moves its data as fast as this device "
    "copies data of that size; far below 1 means time goes to something other than memory "
    "traffic (compute, extra passes, temporaries, dispatch). A case that writes much more "
    "than it reads (the dense Jacobian) can exceed 1 slightly, since the copy reads as many "
    "bytes as it writes. The reference is in the case's dtype: where the device computes "
    "half precision through float32 (XLA:CPU does), its half-precision copy moves fewer "
    "GB/s than a float32 one, and `of copy` is over that. The copy of a 256 MiB float32 "
    "array named above each table is context only.",
    "* **`of matmul`.** The linear loss's cost is matmuls: value and gradient need at least "
    "three `[N, H] @ [H, V]`-sized products (the logits, the gradients of `h` and `W`), "
    "`6 N H V` floating-point operations. `of matmul` is that work's rate over the rate of "
    "one plain `x @ w` of the same shape and dtype timed in the same run (equivalently, "
    "three matmul times over the case's time); 1 would be three plain matmuls' time. It can "
    "exceed 1 where the plain matmul is limited by writing its `[N, V]` output (a small `H`), "
    "which a chunked loss never writes.",
    "* **`compile ms`.** Trace, lower and XLA-compile of a fresh `jax.jit` of the "
    "implementation at the case's shapes (the JSON also has `first_call_ms`: that plus the "
    "first execution, what a first call costs). JAX's caches of inner jitted functions are "
    "shared within a run; its persistent compilation cache is off unless the context below "
    "says otherwise.",
    "* **Context.** Each JSON holds a `context`: the versions of jax, jaxlib, optax and this "
    "package, the backend, device kind and count, the CPU model and usable cores, `XLA_FLAGS`, "
    "the JAX settings, the full command, the date and the git commit.", ""]


def _context_lines(run: dict) -> list[str]:
  ctx = run.get("context")
  if not ctx:
    return []
  v, cpu = ctx.get("versions", {}), ctx.get("cpu", {})
  versions = ", ".join(f"{k} {v[k]}" for k in ("jax", "jaxlib", "optax", "softmax_jax")
                       if v.get(k))
  lines = [f"Context: {versions}; {ctx.get('backend')} ({ctx.get('device_kind')}) × "
           f"{ctx.get('device_count')}; CPU {cpu.get('model')}, {cpu.get('cpu_count')} cores "
           f"({cpu.get('usable_cpus')} usable); XLA_FLAGS `{ctx.get('xla_flags') or ''}`; "
           f"{ctx.get('date')}, commit {ctx.get('git_commit') or '?'}."]
  if ctx.get("command"):
    lines.append(f"Command: `{ctx['command']}`.")
  return [*lines, ""]


def compile_summary(rows: list[bench.Result]) -> str | None:
  """One line on the compile times of a run (``None`` if it has none)."""
  timed = [r for r in rows if r.compile_ms is not None]
  if not timed:
    return None
  ours = sum(r.compile_ms for r in timed if r.impl == "softmax_jax") / 1e3
  slowest = max(timed, key=lambda r: r.compile_ms)
  return (f"Compile time: {len(timed)} programs, {sum(r.compile_ms for r in timed) / 1e3:.1f} s "
          f"in all ({ours:.1f} s this package's); the slowest {slowest.compile_ms:.0f} ms "
          f"({slowest.op} {slowest.shape} {slowest.dtype}, {slowest.impl}).")


def render(runs: list[dict]) -> str:
  lines = ["# Benchmarks", "", *READING]
  for run in runs:
    rows = [bench.Result(**r) for r in run["rows"]]
    dev = f"{rows[0].backend}, {rows[0].device}" if rows else "?"
    lines += [f"## {run.get('label', dev.upper() if dev.startswith('cpu') else dev)}", ""]
    if run.get("machine"):
      lines += [run["machine"], ""]
    lines += _context_lines(run)
    if rows and all(r.ref_gbps is None for r in rows):
      lines += ["This run predates the per-case references and compile times: its `of copy` "
                "is over the 256 MiB copy, so operations whose data sit in cache read above 1.",
                ""]
    if rows and rows[0].backend == "cpu":
      lines += ["### The CPU targets", "", "| figure | target | measured | met |",
                "|---|---|---|---|"]
      for what, target, value, ok in cpu_targets(run["rows"]):
        met = "-" if ok is None else "yes" if ok else "no"
        lines.append(f"| {what} | {target} | {value} | {met} |")
      lines.append("")
    summary = compile_summary(rows)
    lines += ["### All rows", "", *([summary, ""] if summary else []),
              bench.markdown(rows, run.get("copy_gbps")), ""]
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
  parser.add_argument("--plot", type=pathlib.Path, default=DOCS / "benchmarks.png",
                      help="the bar chart of the fraction of copy (--plot '' for none)")
  parser.add_argument("--notes", nargs="*", type=pathlib.Path, default=[],
                      help="markdown files appended after the tables, in order")
  parser.add_argument("--runs", nargs="*", type=pathlib.Path, default=[],
                      help="more CPU runs of the first file's command, tabulated with it")
  args = parser.parse_args()
  runs = [json.loads(p.read_text()) for p in args.json]
  text = render(runs)
  if args.runs:
    text += "\n" + runs_table([runs[0], *(json.loads(p.read_text()) for p in args.runs)])
  for notes in args.notes:
    text += "\n" + notes.read_text()
  args.out.write_text(text)
  if args.plot and str(args.plot) not in ("", "."):
    bench.plot([bench.Result(**r) for run in runs for r in run["rows"]], args.plot)
  print(f"wrote {args.out}" + (f" and {args.plot}" if str(args.plot) not in ("", ".") else ""))
  return 0


if __name__ == "__main__":
  sys.exit(main())
