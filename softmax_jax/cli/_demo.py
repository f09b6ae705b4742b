"""``softmax-jax demo``: the lecture on a small example, each derivative checked by autodiff."""

from __future__ import annotations

import argparse

from softmax_jax.cli import _parsing
from softmax_jax.cli._train import integer


def add_parser(sub) -> None:
  demo = sub.add_parser("demo", help="walk through the lecture and check every derivative")
  demo.add_argument("--classes", type=int, default=4, help="number of classes C (default 4)")
  demo.add_argument("--scale", type=_parsing.finite, default=2.0, help="logit scale (default 2)")
  demo.add_argument("--seed", type=integer(0), default=0)
  demo.set_defaults(func=run, check_args=check)


MAX_CLASSES = 4096  # the demo holds several C×C float64 matrices: 128 MB each here


def check(args: argparse.Namespace) -> str | None:
  """The problem with ``args`` that argparse's types cannot see, or ``None``."""
  if args.classes < 2:
    return "--classes must be at least 2"
  if args.classes > MAX_CLASSES:
    return (f"--classes must be at most {MAX_CLASSES}: the demo builds full C×C Jacobians "
            f"(softmax-jax verify checks larger C through products)")
  return None


def run(args: argparse.Namespace) -> int:
  import jax

  with jax.enable_x64(True):  # float64 for this command only, not for the process
    return _run(args)


def _run(args: argparse.Namespace) -> int:
  import jax
  import jax.numpy as jnp
  import numpy as np

  import softmax_jax as sj

  rng = np.random.default_rng(args.seed)
  z = jnp.asarray(rng.normal(size=args.classes) * args.scale)
  label = int(rng.integers(args.classes))
  t = jax.nn.one_hot(label, args.classes, dtype=z.dtype)
  y = sj.softmax(z)
  fmt = {"float_kind": lambda v: f"{v:.4f}"}
  print(f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind}), {z.dtype}")
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
  errors = []
  for name, got, want in rows:
    errors.append(float(np.max(np.abs(np.asarray(got) - np.asarray(want)))))
    print(f"{name:40s} {errors[-1]:12.2e}")
  worst = float(np.max(errors))  # NaN if any check is NaN, and then not ok
  ok = worst < 1e-12
  print(f"\n{'all derivatives agree' if ok else 'MISMATCH'} (worst {worst:.1e}, bound 1e-12)")
  return 0 if ok else 1
