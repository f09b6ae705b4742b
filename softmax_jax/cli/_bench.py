"""``softmax-jax bench``: time the functions beside jax.nn and optax."""

from __future__ import annotations

import argparse
import sys

from softmax_jax.cli import _parsing
from softmax_jax.cli._train import integer

DTYPES = ("float32", "bfloat16", "float16")


def add_parser(sub) -> None:
  shape = _parsing.shape
  bench = sub.add_parser("bench", help="time the functions beside jax.nn and optax")
  bench.add_argument("--backend", choices=("cpu", "gpu", "tpu"), help="JAX platform to use")
  bench.add_argument("--dtype", "--dtypes", type=_parsing.csv(_parsing.dtype(DTYPES)),
                     default=("float32", "bfloat16"),
                     help=f"comma-separated, from {', '.join(DTYPES)}")
  bench.add_argument("--shapes", type=_parsing.csv(shape("N", "C")),
                     default=((4096, 1024), (512, 32768)),
                     help="row-op shapes NxC (default 4096x1024,512x32768)")
  bench.add_argument("--jacobian-shape", type=shape("N", "C"), default=(256, 128))
  bench.add_argument("--product-shape", type=shape("N", "C"), default=(8, 4096))
  bench.add_argument("--linear-shape", type=shape("N", "H", "V"), default=(1024, 128, 16384),
                     help="tokens x hidden x vocabulary of linear_xent_fwd_bwd")
  bench.add_argument("--ops", type=_parsing.csv(str),
                     help="comma-separated subset of the operations")
  bench.add_argument("--repeats", type=integer(1), default=15)
  bench.add_argument("--json", metavar="PATH", type=_parsing.output_path)
  bench.add_argument("--csv", metavar="PATH", type=_parsing.output_path)
  bench.add_argument("--markdown", metavar="PATH", type=_parsing.output_path)
  bench.add_argument("--plot", metavar="PATH", type=_parsing.output_path,
                     help="bar chart of fraction of copy bandwidth")
  bench.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
