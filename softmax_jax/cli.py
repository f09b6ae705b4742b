"""The ``softmax-jax`` command line.

``softmax-jax demo`` (the default) walks through the lecture on a small
example and checks each analytic derivative against JAX's autodiff.
"""

from __future__ import annotations

import argparse
import sys


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


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="softmax-jax",
      description="Softmax, its analytic Jacobian and cross-entropy in JAX.",
  )
  sub = parser.add_subparsers(dest="command")
  demo = sub.add_parser("demo", help="walk through the lecture and check every derivative")
  demo.add_argument("--classes", type=int, default=4, help="number of classes C (default 4)")
  demo.add_argument("--scale", type=float, default=2.0, help="logit scale (default 2)")
  demo.add_argument("--seed", type=int, default=0)
  demo.set_defaults(func=_demo)
  args = parser.parse_args(argv)
  if args.command is None:
    args = parser.parse_args(["demo", *(argv or [])])
  if args.command == "demo" and args.classes < 2:
    parser.error("--classes must be at least 2")
  return args.func(args)


if __name__ == "__main__":
  sys.exit(main())
