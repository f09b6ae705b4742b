"""Fast-mode first-order checks on a 10-million-parameter MLP: time and sensitivity.

Builds a float32 MLP (1024 inputs, three hidden layers of 2048, 10 classes; batch 64;
integer-label softmax cross-entropy from this package), times one jitted
``jax.grad`` (median of steady-state runs), then ``first_order_checks(loss,
(params,), modes=("rev",), fast=True)`` cold (first call, compiles included) and
warm (second call), the public ``check_derivatives(loss, params, modes=("rev",),
fast=True)`` with ``consistency=False`` (the same first-order checks) and with its
``vmap`` and ``jit`` checks (warm: the best of the second and third calls), and checks
that a planted 1 % error in one layer's weight gradient (a ``jax.custom_vjp`` identity
on that weight whose cotangent is scaled by 1.01) is caught and named.  ``--runs N``
measures in N fresh processes one after another (a gradient's time differs between
processes on some machines) and writes each run and the median of the ratios to
``docs/verify_fast_mode.json``.

    python experiments/verify_fast_mode.py [--runs 3] [--note "2-core CPU, idle"]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from softmax_jax.losses import cross_entropy_with_integer_labels
from softmax_jax.verify import check_derivatives
from softmax_jax.verify._projections import first_order_checks

WIDTHS = (1024, 2048, 2048, 2048, 10)
BATCH = 64


def make_problem(widths=WIDTHS, batch=BATCH, seed=0):
  """Parameters (a list of ``{"w", "b"}`` layers), inputs and labels."""
  key = jax.random.key(seed)
  params = []
  for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
    kw, kb = jax.random.split(jax.random.fold_in(key, i))
    params.append({"w": jax.random.normal(kw, (a, b)) / np.sqrt(a),
                   "b": 0.1 * jax.random.normal(kb, (b,))})
  kx, ky = jax.random.split(jax.random.fold_in(key, 99))
  x = jax.random.normal(kx, (batch, widths[0]))
  y = jax.random.randint(ky, (batch,), 0, widths[-1])
  return params, x, y


@jax.custom_vjp
def _scaled_cotangent(w):
  return w


_scaled_cotangent.defvjp(lambda w: (w, None), lambda _, g: (1.01 * g,))


def make_loss(x, y, planted_layer: int | None = None):
  """The mean cross-entropy of the MLP (tanh hidden layers); ``planted_layer``: that layer's
  weight gradient comes out 1 % too large."""
  def loss(params):
    h = x
    for i, layer in enumerate(params):
      w = _scaled_cotangent(layer["w"]) if i == planted_layer else layer["w"]
      h = h @ w + layer["b"]
      if i < len(params) - 1:
        h = jnp.tanh(h)
    return jnp.mean(cross_entropy_with_integer_labels(h, y))
  return loss


def _median_time(fn, repeats):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _timed(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def measure(repeats: int, note: str) -> dict:
  """One run in this process: times, ratios, and the correct and planted checks."""
  params, x, y = make_problem()
  n_params = sum(int(a.size) for a in jax.tree_util.tree_leaves(params))
  loss = make_loss(x, y)
  grad = jax.jit(jax.grad(loss))
  jax.block_until_ready(grad(params))
  t_grad = _median_time(lambda: grad(params), repeats)

  with jax.enable_x64(True):  # one float64 evaluation: the check makes 2K of them, and a VJP
    params64 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
    loss64 = jax.jit(make_loss(x.astype(jnp.float64), y))
    jax.block_until_ready(loss64(params64))
    t_loss64 = _median_time(lambda: loss64(params64), repeats)

  check = lambda fn: first_order_checks(fn, (params,), modes=("rev",), fast=True)  # noqa: E731
  cold, t_cold = _timed(lambda: check(loss))
  warm, t_warm = _timed(lambda: check(loss))
  t_warm2 = _timed(lambda: check(loss))[1]
  entry = lambda **kw: check_derivatives(loss, params, modes=("rev",), fast=True, **kw)  # noqa: E731
  first_only = [_timed(lambda: entry(consistency=False)) for _ in range(3)]
  every = [_timed(entry) for _ in range(3)]
  planted_layer = 1
  planted, t_planted = _timed(lambda: check(make_loss(x, y, planted_layer)))
  named = planted.checks[0].where
  result = {
      "machine": {"platform": platform.platform(), "processor": platform.processor(),
                  "cpus": os.cpu_count(), "device": str(jax.devices()[0]),
                  "note": note},
      "versions": {"jax": jax.__version__, "numpy": np.__version__,
                   "python": platform.python_version()},
      "model": {"widths": list(WIDTHS), "batch": BATCH, "parameters": n_params,
                "dtype": "float32", "loss": "mean cross_entropy_with_integer_labels"},
      "times_s": {"grad_median": t_grad, "float64_loss_median": t_loss64,
                  "check_cold": t_cold, "check_warm": t_warm, "check_warm_again": t_warm2,
                  "check_planted_cold": t_planted,
                  "check_derivatives_first_order_warm": min(t for _, t in first_only[1:]),
                  "check_derivatives_warm": min(t for _, t in every[1:]),
                  "check_derivatives_cold": every[0][1]},
      "ratios": {"float64_loss": t_loss64 / t_grad, "cold": t_cold / t_grad,
                 "warm": t_warm / t_grad, "warm_again": t_warm2 / t_grad,
                 "check_derivatives_first_order_warm": min(t for _, t in first_only[1:]) / t_grad,
                 "check_derivatives_warm": min(t for _, t in every[1:]) / t_grad},
      "correct": {"passed": cold.checks[0].passed and warm.checks[0].passed
                            and all(r.passed for r, _ in first_only + every),
                  "check": warm.checks[0].to_json()},
      "planted": {"layer": planted_layer, "leaf": f"[0][{planted_layer}]['w']",
                  "relative_error": 0.01, "caught": planted.checks[0].passed is False,
                  "named": f"[0][{planted_layer}]['w']" in named,
                  "check": planted.checks[0].to_json()},
  }
  return result


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="docs/verify_fast_mode.json")
  parser.add_argument("--repeats", type=int, default=7, help="timings per median")
  parser.add_argument("--runs", type=int, default=3, help="fresh processes, one after another")
  parser.add_argument("--note", default="2-core CPU", help="how the machine was (idle, shared)")
  parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.single:  # one run, its JSON on stdout's last line
    print(json.dumps(measure(args.repeats, args.note)))
    return
  runs = []
  for i in range(args.runs):
    out = subprocess.run([sys.executable, __file__, "--single", "--repeats", str(args.repeats),
                          "--note", args.note], check=True, capture_output=True, text=True)
    runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"run {i + 1}: gradient {runs[-1]['times_s']['grad_median'] * 1e3:.1f} ms, warm check "
          f"{runs[-1]['times_s']['check_warm']:.3f} s, ratio {runs[-1]['ratios']['warm']:.1f}x, "
          f"planted caught {runs[-1]['planted']['caught']}")
  summary = {key: statistics.median(r["ratios"][key] for r in runs) for key in runs[0]["ratios"]}
  result = {"summary": {"runs": len(runs), "median_ratios": summary,
                        "max_warm_ratio": max(r["ratios"]["warm"] for r in runs),
                        "all_correct_passed": all(r["correct"]["passed"] for r in runs),
                        "all_planted_caught_and_named": all(
                            r["planted"]["caught"] and r["planted"]["named"] for r in runs)},
            "runs": runs}
  with open(args.out, "w") as fh:
    json.dump(result, fh, indent=1)
  print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
  main()
