"""``softmax-jax predict``: a CSV file predicted with the model of a finished run."""

from __future__ import annotations

import argparse
import sys

from softmax_jax.cli import _machine


def add_parser(sub) -> None:
  predict = sub.add_parser("predict", help="predict a CSV file with a trained run")
  predict.add_argument("--run", required=True, help="the run directory")
  predict.add_argument("data", help="CSV file with the model's feature columns (by name)")
  predict.add_argument("--out", help="output CSV (default <run>/predictions.csv)")
  predict.add_argument("--device", choices=("cpu", "gpu", "tpu"))
  predict.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
  _machine.select_platform(args.device)
  problem = _machine.device_problem(args.device)
  if problem:
    print(f"softmax-jax predict: {problem}", file=sys.stderr)
    return 2
  from softmax_jax.train._datasets import DataError
  from softmax_jax.train._predict import predict_run

  try:
    path, summary = predict_run(args.run, args.data, args.out)
  except (DataError, ValueError) as e:
    print(f"softmax-jax predict: {e}", file=sys.stderr)
    return 2
  except OSError as e:
    print(f"softmax-jax predict: {_machine.fault(e)}", file=sys.stderr)
    return 2
  acc = f", accuracy {summary['accuracy']:.4f}" if "accuracy" in summary else ""
  print(f"{summary['n']} predictions written to {path}{acc}")
  return 0
