"""``softmax-jax bench compare A.json B.json ...``: line up benchmark runs case by case.

The first run is the baseline.  Exit status 0, 1 when a gated case regressed (slower
beyond the runs' spread and by more than ``--threshold``), 2 for an argument or file
error.  Standard library only at the top, so that ``--help`` and argument errors are quick.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from softmax_jax.cli import _parsing

PROG = "softmax-jax bench compare"

EPILOG = """\
Cases are matched by op, impl, shape, dtype and baseline; ratio = median / median of the
first run.  Two runs differ beyond their spread when their [p25, p75] intervals (each
widened to at least --noise of its median) do not overlap.  Gate patterns are fnmatch
patterns OP or OP/IMPL (OP alone: this package's rows of OP), e.g. --gate 'xent*' or
--gate '*/*'.  Exit status: 0, 1 when a gated case regressed, 2 for a bad argument or file."""


def _ratio(text):
  value = _parsing.finite(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be a ratio >= 1, got {text!r}")
  return value


def _fraction(text):
  value = _parsing.finite(text)
  if not 0 <= value < 1:
    raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1), got {text!r}")
  return value


def parser() -> _parsing.Parser:
  p = _parsing.Parser(prog=PROG, epilog=EPILOG,
                      formatter_class=argparse.RawDescriptionHelpFormatter,
                      description="Line up benchmark runs (the JSON of softmax-jax bench --json "
                                  "or of a sweep)\ncase by case against the first.")
  p.add_argument("runs", nargs="+", metavar="RUN.json",
                 help="the baseline, then the others; repeats of one run joined by commas "
                      "(a.json,a2.json) count as one run with the spread of all")
  p.add_argument("--names", type=_parsing.csv(str),
                 help="comma-separated, one per run (default: the file names)")
  p.add_argument("--threshold", type=_ratio, default=1.25,
                 help="ratio above which a gated case regresses (default 1.25)")
  p.add_argument("--gate", type=_parsing.csv(str),
                 help="comma-separated OP or OP/IMPL patterns (default: */softmax_jax)")
  p.add_argument("--noise", type=_fraction, default=0.05,
                 help="least half-width of a run's interval, as a fraction of its median "
                      "(default 0.05)")
  p.add_argument("--relative", action="store_true",
                 help="compare each time over its case's jax.nn/optax baseline in the same "
                      "run: cancels the load of a shared machine (for commits on one machine, "
                      "not for backends)")
  p.add_argument("--markdown", metavar="PATH", type=_parsing.output_path)
  p.add_argument("--plot", metavar="PATH", type=_parsing.output_path,
                 help="each case's ratio, log scale")
  p.add_argument("--json", metavar="PATH", type=_parsing.output_path)
  return p


def _names(groups: list[list[str]]) -> list[str]:
  """The runs' file names (the first of repeats, with their count), or their paths where
  two share a name."""
  for name in (lambda p: pathlib.Path(p).name, str):
    names = [name(g[0]) + (f" (x{len(g)})" if len(g) > 1 else "") for g in groups]
    if len(set(names)) == len(names):
      break
  return names


def main(argv: list[str]) -> int:
  """Runs ``softmax-jax bench compare`` on ``argv`` (the words after ``compare``)."""
  p = parser()
  args = p.parse_args(argv)
  groups = [[f for f in run.split(",") if f] for run in args.runs]
  if any(not g for g in groups):
    p.error("argument RUN.json: an empty file name")
  if len(groups) < 2:
    p.error(f"give at least 2 runs, the baseline first; got {len(groups)}")
  names = list(args.names) if args.names else _names(groups)
  if len(names) != len(args.runs):
    p.error(f"argument --names: {len(names)} names for {len(args.runs)} runs")
  if args.plot:
    try:
      from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
      print(f"{PROG}: --plot needs matplotlib: pip install 'softmax_jax[train]'",
            file=sys.stderr)
      return 2
    kinds = FigureCanvasBase.get_supported_filetypes()
    suffix = pathlib.Path(args.plot).suffix.lower()
    if suffix[1:] not in kinds:
      p.error(f"argument --plot: {args.plot}: matplotlib writes no {suffix or 'unsuffixed'!r} "
              f"files; use one of .{', .'.join(sorted(kinds))}")
  import json

  from softmax_jax.bench._compare import CompareError, compare, load

  try:
    runs = [load(g[0]) if len(g) == 1 else [load(f) for f in g] for g in groups]
    result = compare(runs, names=names, threshold=args.threshold, gate=args.gate,
                     noise=args.noise, relative=args.relative)
  except CompareError as e:
    print(f"{PROG}: {e}", file=sys.stderr)
    return 2
  print(result.text())
  try:
    if args.markdown:
      with open(args.markdown, "w") as fh:
        fh.write(result.markdown() + "\n")
    if args.json:
      with open(args.json, "w") as fh:
        json.dump(result.as_dict(), fh, indent=1)
    if args.plot:
      result.plot(args.plot)
  except OSError as e:  # a full or read-only disk
    print(f"{PROG}: {e.filename + ': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
    return 2
  bad = result.regressions
  if bad:
    listed = "; ".join(f"{ln.op} {ln.label} {ln.shape} {ln.dtype} in {name} "
                       + ("failed" if ratio is None else f"{ratio:.2f}x")
                       for ln, name, ratio in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    print(f"{PROG}: {len(bad)} gated cases regressed beyond {args.threshold:g}x: "
          f"{listed}{more}", file=sys.stderr)
    return 1
  return 0
