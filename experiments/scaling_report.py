"""Strong and weak scaling of one data-parallel training step, and the communication of the
class-sharded cross-entropy, on simulated CPU devices; writes docs/scaling.md (+ JSON).

    python experiments/scaling_report.py            # about a minute on 2 cores

The devices are simulated (``--xla_force_host_platform_device_count=8``) and
share the machine's cores, so the timings show the overhead of partitioning,
not a speed-up; the communication volumes are read from the compiled programs
and hold on real hardware.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh  # noqa: E402

import softmax_jax as sj  # noqa: E402
from softmax_jax import sharded  # noqa: E402
from softmax_jax.train import TrainConfig, init_state, make_epoch, make_optimizer  # noqa: E402
from softmax_jax.train._loop import replicate  # noqa: E402

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
DEVICES = (1, 2, 4, 8)


def _mesh(d, name):
  return Mesh(np.array(jax.devices()[:d]), (name,))


def _collectives(compiled) -> dict:
  """Counts and float32 elements of the all-reduce / all-gather ops of a compiled program."""
  out = {"all-reduce": [0, 0], "all-gather": [0, 0]}
  for line in compiled.as_text().splitlines():
    m = re.search(r"= (.*?) (all-reduce|all-gather)(-start)?\(", line)
    if not m:
      continue
    out[m.group(2)][0] += 1
    for dims in re.findall(r"f32\[([\d,]*)\]", m.group(1)):
      out[m.group(2)][1] += int(np.prod([int(d) for d in dims.split(",") if d]))
  return {k: {"ops": v[0], "float32_elements": v[1]} for k, v in out.items()}


def _time(fn, reps):
  fn()  # compile and warm up
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def train_step(batch, features, classes, d, reps):
  """Median seconds of one optimizer step (an epoch of exactly one batch) on ``d`` devices."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(batch, features)).astype(np.float32)
  y = rng.integers(0, classes, batch).astype(np.int32)
  cfg = TrainConfig(batch_size=batch, epochs=1)
  opt = make_optimizer("adam", 0.01)
  mesh = _mesh(d, "data")
  step = make_epoch(cfg, opt, mesh=mesh)
  state = replicate(init_state(cfg, features, classes, optimizer=opt), mesh)
  args = replicate((x, y, x[:0], y[:0]), mesh)
  comm = _collectives(step.lower(state, *args).compile())
  seconds = _time(lambda: step(state, *args)[1]["train_loss"], reps)
  return seconds, comm


def scaling(features=256, classes=100, strong_batch=8192, weak_per_device=1024, reps=10):
  params = features * classes + classes
  rows = []
  for kind, batch_of in (("strong", lambda d: strong_batch),
                         ("weak", lambda d: weak_per_device * d)):
    base = None
    for d in DEVICES:
      b = batch_of(d)
      seconds, comm = train_step(b, features, classes, d, reps)
      base = base or seconds
      ar = comm["all-reduce"]["float32_elements"]
      rows.append({"kind": kind, "devices": d, "global_batch": b, "per_device_batch": b // d,
                   "step_ms": seconds * 1e3, "samples_per_s": b / seconds,
                   "speedup_vs_1": base / seconds if kind == "strong" else None,
                   "efficiency": (base / seconds / d if kind == "strong" else base / seconds),
                   "all_reduce_ops": comm["all-reduce"]["ops"],
                   "all_reduce_floats": ar, "parameters": params,
                   "ring_bytes_sent_per_device": 2 * (d - 1) / d * ar * 4})
      print(rows[-1])
  return {"features": features, "classes": classes, "parameters": params, "rows": rows}


def class_sharded(n=4096, classes=32768, reps=5):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(n, classes)), jnp.float32)
  t = jnp.asarray(rng.integers(0, classes, n))
  rows = []
  single = jax.jit(jax.value_and_grad(lambda z: sj.cross_entropy_with_integer_labels(z, t)))
  base = _time(lambda: single(x)[1], reps)
  for d in DEVICES:
    mesh = _mesh(d, "model")
    fn = jax.jit(jax.value_and_grad(
        lambda z, mesh=mesh: sharded.cross_entropy_with_integer_labels(z, t, mesh)))
    comm = _collectives(fn.lower(x).compile())
    seconds = _time(lambda fn=fn: fn(x)[1], reps)
    rows.append({"devices": d, "ms": seconds * 1e3, "single_device_ms": base * 1e3,
                 "all_reduce_ops": comm["all-reduce"]["ops"],
                 "all_reduce_floats": comm["all-reduce"]["float32_elements"],
                 "all_gather_floats": comm["all-gather"]["float32_elements"],
                 "logits_floats": n * classes})
    print(rows[-1])
  return {"n": n, "classes": classes, "rows": rows}


def markdown(res) -> str:
  s, c = res["scaling"], res["class_sharded"]
  lines = [
      "# Scaling", "",
      f"Measured by `experiments/scaling_report.py` on a {res['machine']}, with "
      f"{jax.device_count()} simulated CPU devices "
      "(`--xla_force_host_platform_device_count=8`).  **The simulated devices share the "
      "machine's cores**: their timings show what partitioning costs, not the speed-up "
      "real devices give.  The communication columns are read from the compiled programs "
      "(the all-reduce and all-gather operations XLA inserted) and hold on real hardware.",
      "",
      "## Data-parallel training step", "",
      f"Softmax regression, {s['features']} features × {s['classes']} classes "
      f"({s['parameters']:,} parameters), Adam, float32.  One step = one compiled call "
      "(`make_epoch` on an epoch of one batch).  The batch is split along the mesh axis "
      "`data`; parameters and optimizer state are replicated; XLA all-reduces the gradient.",
      "", "| scaling | devices | global batch | per-device batch | step (ms) | samples / s "
      "| speed-up | efficiency | all-reduce ops | floats all-reduced | ring bytes sent per "
      "device |", "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in s["rows"]:
    sp = "—" if r["speedup_vs_1"] is None else f"{r['speedup_vs_1']:.2f}×"
    lines.append(f"| {r['kind']} | {r['devices']} | {r['global_batch']} | "
                 f"{r['per_device_batch']} | {r['step_ms']:.2f} | {r['samples_per_s']:,.0f} | "
                 f"{sp} | {r['efficiency']:.2f} | {r['all_reduce_ops']} | "
                 f"{r['all_reduce_floats']:,} | {r['ring_bytes_sent_per_device']:,.0f} |")
  lines += [
      "", "Efficiency: strong = speed-up / devices; weak = time(1 device) / time(d devices).",
      "", "Per step the devices exchange one gradient: the all-reduce covers the "
      f"{s['parameters']:,} parameters (plus a handful of scalars: the batch's loss and "
      "accuracy sums and the weight total), whatever the batch size.  A ring all-reduce "
      "sends `2 (d − 1) / d × 4 × floats` bytes per device.", "",
      "## Class-sharded cross-entropy", "",
      f"`sharded.cross_entropy_with_integer_labels`, value and gradient, {c['n']} rows × "
      f"{c['classes']:,} classes float32, classes split over the mesh axis `model`.", "",
      "| devices | time (ms) | single device, unsharded (ms) | all-reduce ops | floats "
      "all-reduced | floats all-gathered | logits (floats) |", "|---|---|---|---|---|---|---|"]
  for r in c["rows"]:
    lines.append(f"| {r['devices']} | {r['ms']:.1f} | {r['single_device_ms']:.1f} | "
                 f"{r['all_reduce_ops']} | {r['all_reduce_floats']:,} | "
                 f"{r['all_gather_floats']:,} | {r['logits_floats']:,} |")
  n = c["n"]
  lines += [
      "", f"The forward pass all-reduces `3 N = {3 * n:,}` floats (the row max with `pmax`; "
      "the exponential sums and the target logits with `psum`, which XLA fuses into one "
      "operation) and the backward pass none: each device writes `g·(y − t)` for its own "
      "classes.  Gathering the logits instead would move "
      f"{n * c['classes']:,} floats.  (With one device the collectives stay in the "
      "program as trivial all-reduces.)  The loss now also sums the tail of each row (for "
      "the exact label entry of the gradient): `4 N` floats in one `pmax` and one `psum`, "
      "which `tests/sharded/test_stats.py` counts in the compiled program; the table above "
      "was measured before that change.", "",
      "## What to expect on a real multi-GPU or TPU slice", "",
      "- **Data parallel.** The per-step traffic is one all-reduce of the parameters "
      f"({s['parameters'] * 4 / 1e3:.0f} kB here).  Over NVLink on an 8 × H100 node "
      "(900 GB/s per GPU, NVIDIA H100 datasheet) that is a few microseconds, far below "
      "the time to read a batch of a few thousand rows, so the step time falls as 1/d "
      "(strong scaling) until the per-device batch is so small that kernel-launch latency "
      "dominates, and weak scaling stays flat.  Across hosts the same "
      "all-reduce crosses the network (InfiniBand or TPU ICI), still small for a "
      "softmax-regression or small-MLP model.",
      "- **Class sharded.** Each device reads and writes only its `C/d` columns of the "
      "logits, so memory per device and the bandwidth-bound work both fall as 1/d; the "
      "fixed cost is one `pmax` and one `psum` of `4 N` floats per step (64 kB for N = 4096), "
      "microseconds on NVLink.  This is what makes a 131k–256k vocabulary fit when the "
      "`N × C` logits of one device would not.",
      "- **Multi-host.** Start the same command on every host with `--distributed` (Cloud "
      "TPU, SLURM and Open MPI are detected by `jax.distributed.initialize`) or with "
      "`--coordinator HOST:PORT --num-processes P --process-id I`; see "
      "[distributed.md](distributed.md).", ""]
  return "\n".join(lines)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--json", default=str(DOCS / "scaling.json"))
  p.add_argument("--markdown", default=str(DOCS / "scaling.md"))
  p.add_argument("--reps", type=int, default=10)
  args = p.parse_args()
  res = {"machine": f"{os.cpu_count()}-core {platform.machine()} machine, jax {jax.__version__}",
         "scaling": scaling(reps=args.reps), "class_sharded": class_sharded()}
  pathlib.Path(args.json).write_text(json.dumps(res, indent=1))
  pathlib.Path(args.markdown).write_text(markdown(res))
  print(markdown(res))


if __name__ == "__main__":
  main()
