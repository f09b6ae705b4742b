"""``softmax-jax bench``: time the functions beside jax.nn and optax.

Every argument is checked before anything is timed (a bad one is one line and exit 2).
``--quick`` runs a small grid (a few operations at small shapes, few repetitions);
``--sweep rows|classes`` times the operations along one dimension instead
(``softmax_jax.bench._sweep``).  The JSON holds the rows, the large-array copy bandwidth
and the reproducible context (``softmax_jax.bench.context``) with the full command.
"""

from __future__ import annotations

import argparse
import os
import sys

from softmax_jax.cli import _parsing
from softmax_jax.cli._train import integer

DTYPES = ("float32", "bfloat16", "float16")

# The grids: every option the command line leaves unset takes its value from one of them.
FULL = {"dtype": ("float32", "bfloat16"), "shapes": ((4096, 1024), (512, 32768)),
        "jacobian_shape": (256, 128), "product_shape": (8, 4096),
        "linear_shape": (1024, 128, 16384), "ops": None, "repeats": 15}
QUICK = {"dtype": ("float32",), "shapes": ((1024, 256),), "jacobian_shape": (64, 64),
         "product_shape": (8, 1024), "linear_shape": (256, 64, 4096),
         "ops": ("softmax", "xent_int_fwd_bwd", "softmax_jacobian", "linear_xent_fwd_bwd"),
         "repeats": 5}
OUTPUTS = ("json", "csv", "markdown", "plot")


def _shapes(shapes) -> str:
  return ",".join("x".join(map(str, s)) for s in shapes)


def add_parser(sub) -> None:
  shape = _parsing.shape
  bench = sub.add_parser("bench", help="time the functions beside jax.nn and optax")
  bench.add_argument("--backend", choices=("cpu", "gpu", "tpu"), help="JAX platform to use")
  bench.add_argument("--quick", action="store_true",
                     help=f"a small grid: {', '.join(QUICK['ops'])} at {_shapes(QUICK['shapes'])}"
                          f" {QUICK['dtype'][0]}, {QUICK['repeats']} repeats (the options "
                          "given still apply)")
  bench.add_argument("--sweep", choices=("rows", "classes"),
                     help="time the operations along one dimension instead of the grid")
  bench.add_argument("--dtype", "--dtypes", type=_parsing.csv(_parsing.dtype(DTYPES)),
                     help=f"comma-separated, from {', '.join(DTYPES)} (default "
                          f"{','.join(FULL['dtype'])})")
  bench.add_argument("--shapes", type=_parsing.csv(shape("N", "C")),
                     help=f"row-op shapes NxC (default {_shapes(FULL['shapes'])})")
  bench.add_argument("--jacobian-shape", type=shape("N", "C"),
                     help=f"default {_shapes([FULL['jacobian_shape']])}")
  bench.add_argument("--product-shape", type=shape("N", "C"),
                     help=f"default {_shapes([FULL['product_shape']])}")
  bench.add_argument("--linear-shape", type=shape("N", "H", "V"),
                     help="tokens x hidden x vocabulary of linear_xent_fwd_bwd (default "
                          f"{_shapes([FULL['linear_shape']])})")
  bench.add_argument("--ops", type=_parsing.csv(str),
                     help="comma-separated subset of the operations")
  bench.add_argument("--repeats", type=integer(1), help=f"default {FULL['repeats']}")
  bench.add_argument("--json", metavar="PATH", type=_parsing.output_path)
  bench.add_argument("--csv", metavar="PATH", type=_parsing.output_path)
  bench.add_argument("--markdown", metavar="PATH", type=_parsing.output_path)
  bench.add_argument("--plot", metavar="PATH", type=_parsing.output_path,
                     help="bar chart of the fraction of the same-bytes copy's bandwidth")
  bench.set_defaults(func=run, check_args=check_args)


def check_args(args: argparse.Namespace) -> str | None:
  """What the parser cannot see in one argument alone (standard library only)."""
  paths = {}
  for flag in OUTPUTS:
    path = getattr(args, flag)
    if path is None:
      continue
    key = os.path.realpath(path)
    if key in paths:
      return f"--{flag} and --{paths[key]} are the same file {path}"
    paths[key] = flag
    if os.path.exists(path) and not os.access(path, os.W_OK):
      return f"argument --{flag}: {path} is not writable"
  if args.sweep and (args.csv or args.markdown):
    return "--sweep writes --json and --plot only, not --csv or --markdown"
  return None


def resolve(args: argparse.Namespace) -> dict:
  """Every grid option: the one given, else that of ``--quick`` or of the full grid."""
  grid = QUICK if args.quick else FULL
  return {k: grid[k] if getattr(args, k) is None else getattr(args, k) for k in grid}


def command_line(args: argparse.Namespace, grid: dict) -> str:
  """The ``softmax-jax bench`` command that reruns this grid, every option written out."""
  words = ["softmax-jax", "bench"]
  if args.backend:
    words += ["--backend", args.backend]
  if args.sweep:  # the sweep's own grid: only what it was given
    words += ["--sweep", args.sweep] + (["--quick"] if args.quick else [])
    words += [w for flag, value in (("--dtype", args.dtype), ("--ops", args.ops))
              if value for w in (flag, ",".join(value))]
    words += ["--repeats", str(args.repeats)] if args.repeats else []
  else:  # every option written out; --quick also skips the large-array copy
    words += ["--quick"] if args.quick else []
    words += ["--dtype", ",".join(grid["dtype"]), "--shapes", _shapes(grid["shapes"]),
              "--jacobian-shape", _shapes([grid["jacobian_shape"]]),
              "--product-shape", _shapes([grid["product_shape"]]),
              "--linear-shape", _shapes([grid["linear_shape"]])]
    words += ["--ops", ",".join(grid["ops"])] if grid["ops"] else []
    words += ["--repeats", str(grid["repeats"])]
  for flag in OUTPUTS:
    if getattr(args, flag):
      words += [f"--{flag}", getattr(args, flag)]
  return " ".join(words)


def _fail(message: str) -> int:
  print(f"softmax-jax bench: {message}", file=sys.stderr)
  return 2


def _progress():
  """A progress callback ``(i, n, case)`` (a tqdm bar if tqdm is there) and its closer."""
  state = {"bar": None}

  def progress(i, n, case):
    label = (f"{case.op} {'x'.join(map(str, case.shape))} {case.dtype}"
             if hasattr(case, "op") else str(case))
    if state["bar"] is None:
      try:
        from tqdm import tqdm

        state["bar"] = tqdm(total=n, unit="case", file=sys.stderr)
      except ImportError:
        state["bar"] = False
    if state["bar"]:
      state["bar"].set_description(label)
      if i:
        state["bar"].update(1)
    else:
      print(f"[{i + 1}/{n}] {label}", file=sys.stderr, flush=True)

  def close():
    if state["bar"]:
      state["bar"].update(1)
      state["bar"].close()

  return progress, close


def run(args: argparse.Namespace) -> int:
  import json

  import jax

  if args.plot:
    try:  # before any timing, not after the whole benchmark has run
      import matplotlib  # noqa: F401
    except ImportError:
      return _fail("--plot needs matplotlib: pip install 'softmax_jax[train]'")
  if args.backend:
    jax.config.update("jax_platforms", args.backend)
    try:
      jax.devices()
    except RuntimeError as e:
      return _fail(f"--backend {args.backend}: JAX found no such backend here "
                   f"({str(e).splitlines()[0] if str(e) else type(e).__name__})")
  from softmax_jax import bench

  grid = resolve(args)
  unknown = set(grid["ops"] or ()) - set(bench.OPS)
  if unknown:
    return _fail(f"unknown --ops {sorted(unknown)}; choose from {bench.OPS}")
  if args.sweep:
    return _sweep(args, grid)
  cases = bench.default_cases(grid["shapes"], grid["dtype"], grid["ops"] or bench.OPS,
                              jacobian_shape=grid["jacobian_shape"],
                              product_shape=grid["product_shape"],
                              linear_shape=grid["linear_shape"])
  progress, close = _progress()
  # The large-array copy is context only (every row has its own roofline): --quick skips it.
  rows, copy_gbps = bench.run(cases, reps=grid["repeats"], progress=progress,
                              measure_copy=not args.quick)
  close()
  print(bench.text_table(rows))
  device = f"{jax.default_backend()} ({jax.devices()[0].device_kind})"
  if copy_gbps:
    print(f"copy bandwidth of a 256 MiB array: {copy_gbps:.1f} GB/s on {device}")
  if args.json:
    import dataclasses
    import platform

    import optax

    machine = (f"{os.cpu_count()}-core {platform.machine()} machine, backend {device}, "
               f"jax {jax.__version__}, optax {optax.__version__}")
    context = {**bench.context(), "command": command_line(args, grid)}
    with open(args.json, "w") as fh:
      json.dump({"machine": machine, "copy_gbps": copy_gbps, "context": context,
                 "rows": [dataclasses.asdict(r) for r in rows]}, fh, indent=1)
  if args.csv:
    bench.write_csv(rows, args.csv)
  if args.markdown:
    with open(args.markdown, "w") as fh:
      fh.write(bench.markdown(rows, copy_gbps) + "\n")
  if args.plot:
    bench.plot(rows, args.plot)
  return _verdict(rows)


def _verdict(rows) -> int:
  """Exit 1 with a line for each failed implementation and for the rows that disagree."""
  failed = [r for r in rows if r.failed]
  for r in failed:
    print(f"{r.op} {r.shape} {r.dtype} {r.impl}: {r.note}", file=sys.stderr)
  wrong = [r for r in rows if not r.correct and r not in failed]
  if wrong:
    print(f"{len(wrong)} rows disagree with their baseline: "
          + ", ".join(sorted({f"{r.op} {r.shape}" for r in wrong})), file=sys.stderr)
  return 1 if wrong or failed else 0


def _sweep(args: argparse.Namespace, grid: dict) -> int:
  """``--sweep``: ``softmax_jax.bench._sweep.sweep`` along rows or classes, its table, files."""
  import dataclasses
  import json

  from softmax_jax import bench
  from softmax_jax.bench import _sweep as sweeps
  not_rows = sorted(set(args.ops or ()) - set(sweeps.ROW_OPS))
  if not_rows:
    return _fail(f"--sweep times the row-wise operations only, not --ops {','.join(not_rows)}; "
                 f"choose from {', '.join(sweeps.ROW_OPS)}")
  given = {"dtype": args.dtype[0] if args.dtype else None, "ops": args.ops,
           "reps": args.repeats}
  progress, close = _progress()
  data = sweeps.sweep(args.sweep, quick=args.quick, progress=progress,
                      **{k: v for k, v in given.items() if v is not None})
  close()
  names = {f.name for f in dataclasses.fields(bench.Result)}
  rows = [bench.Result(**{k: v for k, v in r.items() if k in names}) for r in data["rows"]]
  xs = [str(r.get("x", "")) for r in data["rows"]]
  table = bench.text_table(rows, columns=bench.SWEEP_COLUMNS).splitlines()
  width = max(1, *map(len, xs)) if xs else 1
  print("\n".join(f"{x.rjust(width)}  {line}" for x, line in zip(["x", *xs], table, strict=True)))
  if args.json:
    data["context"] = {**(data.get("context") or bench.context()),
                       "command": command_line(args, grid)}
    with open(args.json, "w") as fh:
      json.dump(data, fh, indent=1)
  if args.plot:
    sweeps.plot_sweep(data, args.plot)
  return _verdict(rows)
