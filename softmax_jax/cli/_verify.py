"""``softmax-jax verify``: every function and derivative against a float64 reference."""

from __future__ import annotations

import argparse
import sys

from softmax_jax.cli import _parsing

DTYPES = ("float64", "float32", "bfloat16", "float16")


def _scale(text):
  """A logit scale of the verification grid: a positive number, ``-inf`` or ``masked``."""
  if text in ("-inf", "masked"):
    return text
  try:
    ok = float(text) > 0 and float(text) != float("inf")
  except ValueError:
    ok = False
  if not ok:
    raise ValueError(text)
  return text


_scale.__name__ = "scale (a positive number, -inf or masked)"


def _class_count(text):
  value = int(text)
  if value < 2:
    raise ValueError(text)
  return value


_class_count.__name__ = "class count (an integer >= 2)"


def add_parser(sub) -> None:
  verify = sub.add_parser(
      "verify", help="check every function and derivative against a float64 reference")
  verify.add_argument("--quick", action="store_true", help="a small grid that runs in seconds")
  verify.add_argument("--json", metavar="PATH", type=_parsing.output_path,
                      help="write every row (ours and baselines)")
  verify.add_argument("--all", action="store_true", help="also print the jax.nn/optax rows")
  verify.add_argument("--functions", type=_parsing.csv(str), help="comma-separated subset")
  verify.add_argument("--dtypes", type=_parsing.csv(_parsing.dtype(DTYPES)),
                      help="e.g. float32,bfloat16 (from " + ", ".join(DTYPES) + ")")
  verify.add_argument("--classes", type=_parsing.csv(_class_count), help="e.g. 2,10,1000")
  verify.add_argument("--scales", type=_parsing.csv(_scale), help="e.g. 1,100,-inf,masked")
  verify.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
  import dataclasses
  import json

  from softmax_jax.verify import _grid

  spec = dict(_grid.QUICK if args.quick else _grid.FULL)
  for key in ("dtypes", "classes", "scales"):
    if getattr(args, key):
      spec[key] = getattr(args, key)
  unknown = set(args.functions or ()) - set(_grid.CHECKS)
  if unknown:
    print(f"softmax-jax verify: unknown --functions {sorted(unknown)}; "
          f"choose from {sorted(_grid.CHECKS)}", file=sys.stderr)
    return 2

  def progress(i, n, point):
    print(f"[{i + 1}/{n}] dtype={point[0]} C={point[1]} scale={point[2]}", file=sys.stderr,
          flush=True)

  rows = _grid.run(spec, args.functions, progress)
  shown = rows if args.all else [r for r in rows if r.impl == "softmax_jax"]
  print(_grid.format_table(shown))
  line = _grid.summary(rows)
  print(line)
  if args.json:
    with open(args.json, "w") as fh:
      json.dump({"spec": spec, "summary": line, "rows": [dataclasses.asdict(r) for r in rows]},
                fh, indent=1)
  return 1 if any(r.status == "FAIL" for r in rows) else 0
