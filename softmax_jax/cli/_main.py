"""The ``softmax-jax`` command line.

``softmax-jax demo`` (the default) walks through the lecture on a small
example and checks each analytic derivative against JAX's autodiff.
"""

from __future__ import annotations

import argparse
import sys

from softmax_jax.cli import _train


def _demo(args: argparse.Namespace) -> int:
  import jax
  import jax.numpy as jnp
  import numpy as np

  import softmax_jax as sj

  jax.config.update("jax_enable_x64", True)
  rng = np.random.default_rng(args.seed)
  z = jnp.asarray(rng.normal(size=args.classes) * args.scale)
  label = int(rng.integers(args.classes))
  t = jax.nn.one_hot(label, args.classes, dtype=z.dtype)
  y = sj.softmax(z)
  fmt = {"float_kind": lambda v: f"{v:.4f}"}
  print(f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind}), float64")
  print(f"logits z          = {np.array2string(np.asarray(z), formatter=fmt)}")
  print(f"softmax y         = {np.array2string(np.asarray(y), formatter=fmt)}"
        f"   (sum = {float(y.sum()):.15f})")
  print(f"label t           = {label}")
  print(f"loss ξ = −log y_t = {float(sj.cross_entropy_with_integer_labels(z, label)):.6f}")

  rows = []
  jac = sj.softmax_jacobian(z)
  rows.append(("softmax_jacobian  vs jax.jacfwd", jac, jax.jacfwd(jax.nn.softmax)(z)))
  rows.append(("softmax_jacobian  vs jax.jacrev", jac, jax.jacrev(jax.nn.softmax)(z)))
  v = jnp.asarray(rng.normal(size=args.classes))
  rows.append(("softmax_jvp       vs J @ v", sj.softmax_jvp(z, v), jac @ v))
  grad = jax.grad(sj.cross_entropy_with_integer_labels)(z, label)
  rows.append(("∂ξ/∂z (custom VJP) vs y − t", grad, y - t))
  naive = jax.grad(lambda z: -jax.nn.log_softmax(z)[label])(z)
  rows.append(("∂ξ/∂z (custom VJP) vs jax.grad", grad, naive))
  hess = jax.hessian(sj.cross_entropy_with_integer_labels)(z, label)
  rows.append(("Hessian of ξ       vs softmax_jacobian", hess, jac))
  print()
  print(f"{'check':40s} {'max |error|':>12s}")
  worst = 0.0
  for name, got, want in rows:
    err = float(np.max(np.abs(np.asarray(got) - np.asarray(want))))
    worst = max(worst, err)
    print(f"{name:40s} {err:12.2e}")
  ok = worst < 1e-12
  print(f"\n{'all derivatives agree' if ok else 'MISMATCH'} (worst {worst:.1e}, bound 1e-12)")
  return 0 if ok else 1


class _Parser(argparse.ArgumentParser):
  """An ``ArgumentParser`` whose errors are one line (``--help`` shows the usage)."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _csv(kind):
  """A comma-separated list of ``kind`` values; a bad item is an argparse error naming it."""
  name = getattr(kind, "__name__", "value")

  def parse(text):
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
      raise argparse.ArgumentTypeError(f"empty list {text!r}")
    values = []
    for item in items:
      try:
        values.append(kind(item))
      except ValueError:
        raise argparse.ArgumentTypeError(f"{item!r} is not a valid {name}") from None
    return tuple(values)

  parse.__name__ = f"list of {name}"
  return parse


_BENCH_DTYPES = ("float32", "bfloat16", "float16")


def _dtype(choices):
  """A dtype name among ``choices``."""
  def parse(text):
    if text not in choices:
      raise argparse.ArgumentTypeError(f"unknown dtype {text!r}; choose from {', '.join(choices)}")
    return text

  return parse


def _output_path(text):
  """A file to write: its folder must exist and it must not be a folder itself."""
  import os
  import pathlib

  path = pathlib.Path(text)
  parent = path.parent
  if path.is_dir():
    raise argparse.ArgumentTypeError(f"{text} is a directory, not a file")
  if not parent.is_dir():
    raise argparse.ArgumentTypeError(f"the folder {parent} of {text} does not exist")
  if not os.access(parent, os.W_OK):
    raise argparse.ArgumentTypeError(f"the folder {parent} of {text} is not writable")
  return text


_VERIFY_DTYPES = ("float64", "float32", "bfloat16", "float16")


def _verify_scale(text):
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


_verify_scale.__name__ = "scale (a positive number, -inf or masked)"


def _verify_class_count(text):
  value = int(text)
  if value < 2:
    raise ValueError(text)
  return value


_verify_class_count.__name__ = "class count (an integer >= 2)"


def _verify(args: argparse.Namespace) -> int:
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


def _shape(*names):
  """A shape written ``AxB`` (one positive integer per name in ``names``)."""
  form = "x".join(names)
  example = {2: "4096x1024", 3: "1024x128x16384"}[len(names)]

  def parse(text):
    parts = text.lower().split("x")
    try:
      shape = tuple(int(v) for v in parts)
    except ValueError:
      shape = ()
    if len(shape) != len(names) or min(shape) < 1:
      raise argparse.ArgumentTypeError(
          f"bad shape {text!r}; write it as {form} with positive integers, e.g. {example}")
    return shape

  parse.__name__ = "shape"
  return parse


def _bench(args: argparse.Namespace) -> int:
  import dataclasses
  import json

  import jax

  if args.plot:
    try:  # before any timing, not after the whole benchmark has run
      import matplotlib  # noqa: F401
    except ImportError:
      print("softmax-jax bench: --plot needs matplotlib: pip install 'softmax_jax[train]'",
            file=sys.stderr)
      return 2
  if args.backend:
    jax.config.update("jax_platforms", args.backend)
  from softmax_jax import bench

  unknown = set(args.ops or ()) - set(bench.OPS)
  if unknown:
    print(f"softmax-jax bench: unknown --ops {sorted(unknown)}; choose from {bench.OPS}",
          file=sys.stderr)
    return 2
  cases = bench.default_cases(args.shapes, args.dtype, args.ops or bench.OPS,
                              jacobian_shape=args.jacobian_shape,
                              product_shape=args.product_shape,
                              linear_shape=args.linear_shape)
  bar = None
  try:
    from tqdm import tqdm

    bar = tqdm(total=len(cases), unit="case", file=sys.stderr)
  except ImportError:
    pass

  def progress(i, n, case):
    label = f"{case.op} {'x'.join(map(str, case.shape))} {case.dtype}"
    if bar is not None:
      bar.set_description(label)
      if i:
        bar.update(1)
    else:
      print(f"[{i + 1}/{n}] {label}", file=sys.stderr, flush=True)

  rows, copy_gbps = bench.run(cases, reps=args.repeats, progress=progress)
  if bar is not None:
    bar.update(1)
    bar.close()
  print(bench.text_table(rows))
  print(f"copy bandwidth: {copy_gbps:.1f} GB/s on {jax.default_backend()} "
        f"({jax.devices()[0].device_kind})")
  if args.json:
    import os
    import platform

    import optax

    machine = (f"{os.cpu_count()}-core {platform.machine()} machine, backend "
               f"{jax.default_backend()} ({jax.devices()[0].device_kind}), jax {jax.__version__}, "
               f"optax {optax.__version__}")
    with open(args.json, "w") as fh:
      json.dump({"machine": machine, "copy_gbps": copy_gbps,
                 "rows": [dataclasses.asdict(r) for r in rows]}, fh, indent=1)
  if args.csv:
    bench.write_csv(rows, args.csv)
  if args.markdown:
    with open(args.markdown, "w") as fh:
      fh.write(bench.markdown(rows, copy_gbps) + "\n")
  if args.plot:
    bench.plot(rows, args.plot)
  failed = [r for r in rows if r.failed]
  for r in failed:
    print(f"{r.op} {r.shape} {r.dtype} {r.impl}: {r.note}", file=sys.stderr)
  wrong = [r for r in rows if not r.correct and r not in failed]
  if wrong:
    print(f"{len(wrong)} rows disagree with their baseline: "
          + ", ".join(sorted({f"{r.op} {r.shape}" for r in wrong})), file=sys.stderr)
  return 1 if wrong or failed else 0


def main(argv: list[str] | None = None) -> int:
  parser = _Parser(
      prog="softmax-jax",
      description="Softmax, its analytic Jacobian and cross-entropy in JAX.",
  )
  sub = parser.add_subparsers(dest="command")
  demo = sub.add_parser("demo", help="walk through the lecture and check every derivative")
  demo.add_argument("--classes", type=int, default=4, help="number of classes C (default 4)")
  demo.add_argument("--scale", type=float, default=2.0, help="logit scale (default 2)")
  demo.add_argument("--seed", type=int, default=0)
  demo.set_defaults(func=_demo)
  verify = sub.add_parser(
      "verify", help="check every function and derivative against a float64 reference")
  verify.add_argument("--quick", action="store_true", help="a small grid that runs in seconds")
  verify.add_argument("--json", metavar="PATH", type=_output_path,
                      help="write every row (ours and baselines)")
  verify.add_argument("--all", action="store_true", help="also print the jax.nn/optax rows")
  verify.add_argument("--functions", type=_csv(str), help="comma-separated subset")
  verify.add_argument("--dtypes", type=_csv(_dtype(_VERIFY_DTYPES)),
                      help="e.g. float32,bfloat16 (from " + ", ".join(_VERIFY_DTYPES) + ")")
  verify.add_argument("--classes", type=_csv(_verify_class_count), help="e.g. 2,10,1000")
  verify.add_argument("--scales", type=_csv(_verify_scale), help="e.g. 1,100,-inf,masked")
  verify.set_defaults(func=_verify)
  bench = sub.add_parser("bench", help="time the functions beside jax.nn and optax")
  bench.add_argument("--backend", choices=("cpu", "gpu", "tpu"), help="JAX platform to use")
  bench.add_argument("--dtype", "--dtypes", type=_csv(_dtype(_BENCH_DTYPES)),
                     default=("float32", "bfloat16"),
                     help=f"comma-separated, from {', '.join(_BENCH_DTYPES)}")
  bench.add_argument("--shapes", type=_csv(_shape("N", "C")),
                     default=((4096, 1024), (512, 32768)),
                     help="row-op shapes NxC (default 4096x1024,512x32768)")
  bench.add_argument("--jacobian-shape", type=_shape("N", "C"), default=(256, 128))
  bench.add_argument("--product-shape", type=_shape("N", "C"), default=(8, 4096))
  bench.add_argument("--linear-shape", type=_shape("N", "H", "V"), default=(1024, 128, 16384),
                     help="tokens x hidden x vocabulary of linear_xent_fwd_bwd")
  bench.add_argument("--ops", type=_csv(str), help="comma-separated subset of the operations")
  bench.add_argument("--repeats", type=_train.integer(1), default=15)
  bench.add_argument("--json", metavar="PATH", type=_output_path)
  bench.add_argument("--csv", metavar="PATH", type=_output_path)
  bench.add_argument("--markdown", metavar="PATH", type=_output_path)
  bench.add_argument("--plot", metavar="PATH", type=_output_path,
                     help="bar chart of fraction of copy bandwidth")
  bench.set_defaults(func=_bench)
  _train.add_parsers(sub)
  args = parser.parse_args(argv)
  if args.command is None:
    args = parser.parse_args(["demo", *(argv or [])])
  if args.command == "demo" and args.classes < 2:
    parser.error("--classes must be at least 2")
  try:
    return args.func(args)
  except OSError as e:  # last resort, for faults of the machine (a full or read-only disk)
    where = f"{e.filename}: " if e.filename else ""
    print(f"{parser.prog} {args.command}: {where}{e.strerror or e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
