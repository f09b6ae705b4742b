"""Times `softmax-jax train` and what its checkpoints cost; writes docs/train_timing.json.

    python experiments/train_timing.py                      # both parts, 3 runs each
    python experiments/train_timing.py --label before --pythonpath /tmp/old
    python experiments/train_timing.py --only default --runs 5

1. The default run from a cold start: ``softmax-jax train --out <fresh dir>`` (iris,
   default flags, progress bar on) in a new process, with JAX's persistent
   compilation cache off (``SOFTMAX_JAX_COMPILATION_CACHE=0``), as a first run on a new
   machine is.  Wall time of the whole process, its CPU time (user + system, all
   threads), the number of XLA compilations it made, and the time JAX reports
   (``JAX_LOG_COMPILES``) for tracing, lowering to MLIR and XLA-compiling its
   programs: ``compile_s`` the XLA part, ``first_call_s`` the three together (what the
   first calls of the jitted programs cost beyond running them).
2. Checkpoints in a long run: 2000 (and 20000) epochs of the default model, a
   checkpoint every 10 epochs against one at the end only (``--checkpoint-every`` the
   number of epochs), without figures.  The cost is the difference of the training
   times (``seconds_this_session`` of ``metrics.json``: building the state, compiling
   and the epochs, checkpoints included), of the same without the compilations
   (``epochs``), and of the whole process.

Each figure is the median of ``--runs`` runs in new processes (part 2 alternates the
two configurations).  The machine is noted
(CPU count, load average before each run): on a machine that others are loading too
the figures vary from run to run by more than the effects measured, and the CPU
times are the steadier figure.  ``--label`` stores the results under that name (the
other labels in the file are kept), ``--pythonpath`` measures another copy of the
package (e.g. ``git archive`` of an older commit).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"


def _run(args: list[str], cwd: pathlib.Path, pythonpath: str | None) -> dict:
  """One ``softmax-jax`` process: wall and CPU seconds, compilations, its metrics.json."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "SOFTMAX_JAX_COMPILATION_CACHE": "0",
         "JAX_LOG_COMPILES": "1"}
  if pythonpath:
    env["PYTHONPATH"] = pythonpath
  load = os.getloadavg()[0]
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  start = time.perf_counter()
  proc = subprocess.run([sys.executable, "-m", "softmax_jax", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=900)
  wall = time.perf_counter() - start
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  if proc.returncode != 0:
    raise RuntimeError(f"softmax-jax {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
  out = cwd / args[args.index("--out") + 1]
  metrics = json.loads((out / "metrics.json").read_text())
  compiles = [(name, float(secs)) for name, secs in re.findall(
      r"Finished XLA compilation of (\S+) in ([0-9.e-]+) sec", proc.stderr)]
  lowerings = [float(secs) for secs in re.findall(
      r"Finished jaxpr to MLIR module conversion \S+ in ([0-9.e-]+) sec", proc.stderr)]
  # Only the programs that were compiled: an inner jitted function's tracing is part of
  # its caller's.
  programs = {name for name, _ in compiles}
  tracings = [float(secs) for name, secs in re.findall(
      r"Finished tracing (?:\+ transforming )?(\S+) for (?:p?jit) in ([0-9.e-]+) sec",
      proc.stderr) if f"jit({name})" in programs]
  # The training time without the compilations it includes (the initial state's, the epoch's).
  epochs_s = metrics["seconds_this_session"] - sum(
      secs for name, secs in compiles[:2] if name in ("jit(build)", "jit(epoch)"))
  return {"wall_s": wall,
          "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
          "training_s": metrics["seconds_this_session"], "epochs_s": epochs_s,
          "compilations": len(compiles), "compile_s": sum(secs for _, secs in compiles),
          "trace_s": sum(tracings), "lower_s": sum(lowerings),
          "first_call_s": sum(tracings) + sum(lowerings) + sum(secs for _, secs in compiles),
          "checkpoints_kept": sorted(int(p.name) for p in (out / "checkpoints").iterdir()
                                     if p.name.isdigit()),
          "load_average_before": load}


def _median(runs: list[dict], key: str) -> float:
  return statistics.median(r[key] for r in runs)


def default_run(n: int, pythonpath: str | None) -> dict:
  with tempfile.TemporaryDirectory() as tmp:
    runs = [_run(["train", "--out", f"run{i}"], pathlib.Path(tmp), pythonpath)
            for i in range(n)]
  return {"command": "softmax-jax train --out <fresh dir>",
          "median_wall_s": _median(runs, "wall_s"), "median_cpu_s": _median(runs, "cpu_s"),
          "median_training_s": _median(runs, "training_s"),
          "median_compile_s": _median(runs, "compile_s"),
          "median_first_call_s": _median(runs, "first_call_s"),
          "compilations": runs[0]["compilations"], "runs": runs}


def checkpoint_cost(n: int, pythonpath: str | None, epochs: int) -> dict:
  common = ["train", "--epochs", str(epochs), "--no-plots", "--quiet"]
  configs = (("every_10", 10), ("end_only", epochs))
  runs: dict = {name: [] for name, _ in configs}
  with tempfile.TemporaryDirectory() as tmp:
    for i in range(n):  # interleaved, so that a change of the machine's load hits both
      for name, every in configs:
        runs[name].append(_run([*common, "--checkpoint-every", str(every), "--out", f"{name}{i}"],
                               pathlib.Path(tmp), pythonpath))
  result = {name: {"median_wall_s": _median(r, "wall_s"), "median_cpu_s": _median(r, "cpu_s"),
                   "median_training_s": _median(r, "training_s"),
                   "median_epochs_s": _median(r, "epochs_s"), "runs": r}
            for name, r in runs.items()}
  base, ckpt = result["end_only"], result["every_10"]
  result["overhead_training"] = ckpt["median_training_s"] / base["median_training_s"] - 1
  result["overhead_epochs"] = ckpt["median_epochs_s"] / base["median_epochs_s"] - 1
  result["overhead_wall"] = ckpt["median_wall_s"] / base["median_wall_s"] - 1
  result["overhead_cpu"] = ckpt["median_cpu_s"] / base["median_cpu_s"] - 1
  result["command"] = (f"softmax-jax train --epochs {epochs} --no-plots --quiet "
                       f"--checkpoint-every 10 (or {epochs}) --out <fresh dir>")
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", type=int, default=3)
  parser.add_argument("--only", choices=("default", "checkpoints"))
  parser.add_argument("--label", default="current")
  parser.add_argument("--epochs", type=int, nargs="+", default=[2000, 20000],
                      help="lengths of the long runs of part 2")
  parser.add_argument("--pythonpath", help="PYTHONPATH of the softmax_jax copy to measure")
  parser.add_argument("--note", default="", help="recorded with the results")
  parser.add_argument("--json", type=pathlib.Path, default=DOCS / "train_timing.json")
  args = parser.parse_args()
  entry: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                             "python": platform.python_version()},
                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                 "note": args.note, "runs_each": args.runs}
  if args.only in (None, "default"):
    entry["default_run"] = default_run(args.runs, args.pythonpath)
    run = entry["default_run"]
    print(f"default run: median {run['median_wall_s']:.2f} s wall, "
          f"{run['median_cpu_s']:.2f} s CPU, {run['compilations']} compilations taking "
          f"{run['median_compile_s']:.2f} s (with tracing and lowering "
          f"{run['median_first_call_s']:.2f} s)", flush=True)
  if args.only in (None, "checkpoints"):
    entry["checkpoints"] = {}
    for epochs in args.epochs:
      entry["checkpoints"][str(epochs)] = cost = checkpoint_cost(args.runs, args.pythonpath,
                                                                 epochs)
      print(f"checkpoints every 10 of {epochs} epochs: training "
            f"{cost['overhead_training']:+.1%} (epochs alone {cost['overhead_epochs']:+.1%}), "
            f"wall {cost['overhead_wall']:+.1%}, CPU {cost['overhead_cpu']:+.1%}", flush=True)
  results = json.loads(args.json.read_text()) if args.json.exists() else {}
  results[args.label] = {**results.get(args.label, {}), **entry}
  args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
  main()
