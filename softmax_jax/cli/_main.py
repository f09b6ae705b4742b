"""The ``softmax-jax`` command line: the parser and the dispatch to one module per subcommand.

``softmax-jax demo`` (the default) walks through the lecture on a small example and
checks each analytic derivative against JAX's autodiff; ``verify``, ``bench``, ``train``
and ``predict`` are in ``_verify.py``, ``_bench.py`` and ``_train.py``.  The modules of
this folder import only the standard library at the top (JAX, NumPy and the numerical
modules inside the functions that run a command), so that ``--help`` and argument errors
do no numerical work.
"""

from __future__ import annotations

import sys

from softmax_jax.cli import _bench, _demo, _parsing, _verify
from softmax_jax.cli._train import add_parsers as add_train_parsers


def main(argv: list[str] | None = None) -> int:
  parser = _parsing.Parser(
      prog="softmax-jax",
      description="Softmax, its analytic Jacobian and cross-entropy in JAX.",
  )
  sub = parser.add_subparsers(dest="command")
  _demo.add_parser(sub)
  _verify.add_parser(sub)
  _bench.add_parser(sub)
  add_train_parsers(sub)
  args = parser.parse_args(argv)
  if args.command is None:
    args = parser.parse_args(["demo", *(argv or [])])
  problem = getattr(args, "check_args", lambda _: None)(args)
  if problem:
    parser.error(problem)
  try:
    return args.func(args)
  except OSError as e:  # last resort, for faults of the machine (a full or read-only disk)
    where = f"{e.filename}: " if e.filename else ""
    print(f"{parser.prog} {args.command}: {where}{e.strerror or e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
