"""The ``softmax-jax`` command line: the parser and the dispatch to one module per subcommand.

``softmax-jax demo`` (the default) walks through the lecture on a small example and
checks each analytic derivative against JAX's autodiff; ``verify``, ``bench``, ``train``
and ``predict`` are in ``_verify.py``, ``_bench.py`` and ``_train.py``.  The modules of
this folder import only the standard library at the top (JAX, NumPy and the numerical
modules inside the functions that run a command), so that ``--help`` and argument errors
do no numerical work.

A SIGINT or SIGTERM that comes before a command has its own handling (``train``
checkpoints on one) ends the process with one line and exit code 130 or 143, never a
traceback: ``main`` installs a handler before anything heavy is imported.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from softmax_jax.cli import _bench, _compare, _demo, _parsing, _verify
from softmax_jax.cli._train import add_parsers as add_train_parsers


def _command(argv: list[str] | None) -> str:
  words = sys.argv[1:] if argv is None else argv
  command = next((a for a in words if not a.startswith("-")), None)
  return f"softmax-jax {command}" if command else "softmax-jax"


def _stop_at_once(where: str):
  """A handler that ends the process with one line and 128 + the signal's number.

  It does not raise: an exception raised while JAX's C++ extension initialises comes
  out as an ``ImportError`` with a traceback.  Before a command installs its own
  handling nothing has been written, so there is nothing to clean up.
  """
  def handle(signum, frame):
    for stream in (sys.stdout, sys.stderr):
      with contextlib.suppress(Exception):
        stream.flush()
    os.write(2, f"\n{where}: stopped by {signal.Signals(signum).name}\n".encode())
    os._exit(128 + signum)
  return handle


def main(argv: list[str] | None = None) -> int:
  where = _command(argv)
  previous = {}
  for sig, default in ((signal.SIGINT, signal.default_int_handler),
                       (signal.SIGTERM, signal.SIG_DFL)):
    with contextlib.suppress(ValueError):  # not the main thread: leave them be
      if signal.getsignal(sig) is default:  # a signal the caller ignores stays ignored
        previous[sig] = signal.signal(sig, _stop_at_once(where))
  try:
    return _dispatch(argv)
  except KeyboardInterrupt:  # SIGINT where the handler could not be installed
    print(f"{where}: stopped by SIGINT", file=sys.stderr)
    return 128 + signal.SIGINT
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)


def _dispatch(argv: list[str] | None) -> int:
  words = sys.argv[1:] if argv is None else list(argv)
  if words[:2] == ["bench", "compare"]:  # its own parser: ``bench`` itself takes options only
    return _compare.main(words[2:])
  parser = _parsing.Parser(
      prog="softmax-jax",
      description="Softmax, its analytic Jacobian and cross-entropy in JAX.",
  )
  sub = parser.add_subparsers(dest="command")
  _demo.add_parser(sub)
  _verify.add_parser(sub)
  _bench.add_parser(sub)
  bench = sub.choices["bench"]
  bench.epilog = "\n\n".join(filter(None, [bench.epilog, (
      "softmax-jax bench compare A.json B.json ... lines up runs case by case and exits 1 "
      "when a gated case regressed (see softmax-jax bench compare --help).")]))
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
