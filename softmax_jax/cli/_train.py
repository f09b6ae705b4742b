"""``softmax-jax train``: the command line over :func:`softmax_jax.train.train_run`.

The options become a ``TrainConfig`` and a ``DataConfig`` (or, with ``--resume``, are
read from the run directory); every mistake is one line naming the flag (exit 2)
before any work.  ``softmax-jax predict`` is in ``_predict``, the signal handling in
``_signals`` and the progress bar in ``_progress``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import pathlib
import sys
import time
from typing import TYPE_CHECKING, NamedTuple

from softmax_jax.cli import _machine, _predict
from softmax_jax.cli._progress import Progress
from softmax_jax.cli._signals import StopSignals

if TYPE_CHECKING:
  from softmax_jax.train import DataConfig, TrainConfig

# Options that belong to the run's configuration (refused with --resume, which
# continues the run with the configuration saved in its directory).
_TRAIN_KEYS = {"optimizer": "optimizer", "lr": "learning_rate", "batch_size": "batch_size",
               "l2": "l2", "hidden": "hidden", "seed": "seed", "grad": "grad", "dtype": "dtype",
               "compute_dtype": "compute_dtype", "patience": "patience"}
_DATA_KEYS = {"dataset": "dataset", "label": "label", "n_samples": "n_samples",
              "features": "n_features", "classes": "n_classes", "val_fraction": "val_fraction",
              "test_fraction": "test_fraction", "seed": "seed"}


# Flags of the blobs generator, refused for the other data sets (not silently ignored).
_BLOBS_ONLY = ("n_samples", "features", "classes")
_EXTRA = "pip install 'softmax_jax[train]'"


def integer(low: int):
  """An argparse type: an integer ``>= low``."""
  def parse(text):
    try:
      value = int(text)
    except ValueError:
      value = None
    if value is None or value < low:
      raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}")
    return value

  return parse


def real(low: float, high: float | None = None):
  """An argparse type: a finite number ``>= low`` (and ``< high``)."""
  def parse(text):
    try:
      value = float(text)
    except ValueError:
      value = math.nan
    if not (math.isfinite(value) and value >= low and (high is None or value < high)):
      span = f"in [{low:g}, {high:g})" if high is not None else f">= {low:g}"
      raise argparse.ArgumentTypeError(f"must be a finite number {span}, got {text!r}")
    return value

  return parse


def _batch_size(text):
  if text.lower() == "full":
    return "full"
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be a positive integer or 'full', got {text!r}")
  return value


def _label(text):
  """A column by name, or by number counted from 1 as in error messages (-1: the last)."""
  try:
    number = int(text)
  except ValueError:
    return text
  if number == 0:
    raise argparse.ArgumentTypeError("columns are numbered from 1 (-1 is the last); got 0")
  return number - 1 if number > 0 else number


def add_parsers(sub) -> None:
  train = sub.add_parser(
      "train", help="train softmax regression (or a small network) and write a run directory",
      description="Train on iris (default), digits, Gaussian blobs or your own CSV file.")
  g = train.add_argument_group("data")
  g.add_argument("--dataset", help="iris | digits | blobs | PATH.csv (default iris)")
  g.add_argument("--label", type=_label, help="CSV label column: its name, or its number "
                 "counted from 1 (-1: the last; default)")
  g.add_argument("--n-samples", type=integer(2), help="blobs: number of samples (default 1000)")
  g.add_argument("--features", type=integer(1), help="blobs: number of features (default 2)")
  g.add_argument("--classes", type=integer(2), help="blobs: number of classes (default 3)")
  g.add_argument("--val-fraction", type=real(0, 1), help="validation share (default 0.15)")
  g.add_argument("--test-fraction", type=real(0, 1), help="test share (default 0.2)")
  g = train.add_argument_group("training")
  g.add_argument("--optimizer", choices=("sgd", "momentum", "adam", "adamw", "lbfgs"),
                 help="default adam; lbfgs is full batch with a line search")
  g.add_argument("--lr", type=real(0), help="learning rate (default 0.01; unused by lbfgs)")
  g.add_argument("--epochs", type=integer(1), help="default 200")
  g.add_argument("--batch-size", type=_batch_size, help="default 32; 'full' for full batch")
  g.add_argument("--l2", type=real(0), help="L2 strength λ in mean ξ + λ/2 ‖W‖² (default 1e-3)")
  g.add_argument("--hidden", type=integer(0), help="tanh hidden units; 0 = softmax regression")
  g.add_argument("--seed", type=integer(0),
                 help="seeds the split, the initial weights and shuffling")
  g.add_argument("--grad", choices=("autodiff", "analytic"), help="jax.grad or the lecture's "
                 "formula X^T(Y-T)/n + λW (default autodiff)")
  g.add_argument("--dtype", choices=("float32", "float64"), help="default float32")
  g.add_argument("--compute-dtype", choices=("bfloat16",), help="matrix products in bfloat16")
  g.add_argument("--patience", type=integer(1), help="early stopping on the validation loss")
  g = train.add_argument_group("run")
  g.add_argument("--out", help="run directory (default runs/<dataset>-<time>)")
  g.add_argument("--resume", metavar="RUN", help="continue the run in RUN from its checkpoint")
  g.add_argument("--overwrite", action="store_true", help="allow --out to hold files")
  g.add_argument("--checkpoint-every", type=integer(1),
                 help="epochs between checkpoints (default 10; written in the background, "
                      "at most one every 5 seconds, and at the end)")
  g.add_argument("--device", choices=("cpu", "gpu", "tpu"), help="JAX platform to use")
  g = train.add_argument_group("devices and hosts")
  g.add_argument("--mesh", help="data-parallel mesh, e.g. data=8 (data=-1: every device)")
  g.add_argument("--data-parallel", action="store_true", help="same as --mesh data=-1")
  g.add_argument("--distributed", action="store_true",
                 help="call jax.distributed.initialize() from the environment (TPU pods, "
                      "SLURM, Open MPI, JAX_COORDINATOR_ADDRESS...)")
  g.add_argument("--coordinator", help="HOST:PORT of process 0 (multi-host)")
  g.add_argument("--num-processes", type=integer(1), help="number of processes (multi-host)")
  g.add_argument("--process-id", type=integer(0), help="this process's index (multi-host)")
  g = train.add_argument_group("output")
  g.add_argument("--no-plots", action="store_true", help="skip the figures")
  g.add_argument("--quiet", action="store_true", help="no progress bar")
  train.set_defaults(func=_train)
  _predict.add_parser(sub)


def _worded_with_flags(message: str) -> str:
  """A configuration error worded with the command line's flags, not the dataclass fields."""
  fields = {field: k for k, field in {**_TRAIN_KEYS, **_DATA_KEYS}.items()}
  fields["epochs"] = "epochs"
  head, sep, rest = message.partition(": ")
  if head in ("TrainConfig", "split") and sep:
    name = rest.split()[0].rstrip(",:=")
    name = name.split("=")[0]
    flag = fields.get(name)
    if flag is not None:
      return f"--{flag.replace('_', '-')}: {rest}"
  return message


class Settings(NamedTuple):
  """What a ``train`` command line asks for."""

  train: TrainConfig
  data: DataConfig
  out: pathlib.Path  # the run directory
  checkpoint_every: int


def _resumed_settings(args) -> Settings:
  from softmax_jax.train._config import TrainConfig
  from softmax_jax.train._rundir import RunError, read_json
  from softmax_jax.train._runs import DataConfig

  saved = pathlib.Path(args.resume) / "config.json"
  if not saved.exists():
    raise ValueError(f"--resume {args.resume}: no run there ({saved} is missing)")
  cfg = read_json(saved)
  try:
    train = TrainConfig.from_dict(cfg["train"])
    data = DataConfig(**cfg["data"])
    every = cfg.get("checkpoint_every", 10)
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
      raise ValueError(f"checkpoint_every must be a positive integer, got {every!r}")
  except (KeyError, TypeError, ValueError) as e:
    what = f"missing {e}" if isinstance(e, KeyError) else str(e)
    raise RunError(f"{saved}: not a configuration written by softmax-jax train ({what})") from None
  if args.epochs is not None:
    train = dataclasses.replace(train, epochs=args.epochs)
  return Settings(train, data, pathlib.Path(args.resume), args.checkpoint_every or every)


def _settings(args) -> Settings:
  from softmax_jax.train._config import TrainConfig
  from softmax_jax.train._runs import DataConfig

  if args.resume:
    given = [k for k in {**_TRAIN_KEYS, **_DATA_KEYS} if getattr(args, k) is not None]
    extra = [k for k in ("out", "overwrite") if getattr(args, k)]
    if given or extra:
      flags = ", ".join("--" + k.replace("_", "-") for k in sorted(set(given)) + extra)
      raise ValueError(f"--resume continues a run with the configuration saved in it; "
                       f"drop {flags} (only --epochs, --checkpoint-every, --device, --no-plots "
                       "and --quiet may be given)")
    return _resumed_settings(args)
  name = (args.dataset or "iris").strip()
  builtin = name.lower() in ("iris", "digits", "blobs")
  if name.lower() != "blobs":
    wrong = [k for k in _BLOBS_ONLY if getattr(args, k) is not None]
    if wrong:
      raise ValueError(f"--{wrong[0].replace('_', '-')} applies to --dataset blobs only; "
                       f"{name} has its own samples, features and classes")
  if builtin and args.label is not None:
    raise ValueError(f"--label applies to CSV files only; {name} has its own labels")
  val = 0.15 if args.val_fraction is None else args.val_fraction
  test = 0.2 if args.test_fraction is None else args.test_fraction
  if val + test >= 1:
    raise ValueError(f"--val-fraction {val:g} + --test-fraction {test:g} must be < 1 to leave "
                     "training data")
  if args.patience is not None and val == 0:
    raise ValueError("--patience (early stopping) needs a validation set; drop "
                     "--val-fraction 0")
  tk = {field: getattr(args, k) for k, field in _TRAIN_KEYS.items() if getattr(args, k) is not None}
  if tk.get("batch_size") == "full":
    tk["batch_size"] = None
  if tk.get("optimizer") == "lbfgs":
    if tk.get("batch_size", None) is not None:
      raise ValueError("--optimizer lbfgs is full batch; drop --batch-size or pass "
                       "--batch-size full")
    tk["batch_size"] = None
  if args.epochs is not None:
    tk["epochs"] = args.epochs
  try:
    train = TrainConfig(**tk)
  except ValueError as e:
    raise ValueError(_worded_with_flags(str(e))) from None
  data = DataConfig(**{field: getattr(args, k) for k, field in _DATA_KEYS.items()
                       if getattr(args, k) is not None})
  name = data.dataset
  if pathlib.Path(name).is_file():  # a CSV file: store its absolute path, name the run after it
    data = dataclasses.replace(data, dataset=str(pathlib.Path(name).resolve()))
    name = pathlib.Path(name).name.split(".")[0]
  out = pathlib.Path(args.out or f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}")
  return Settings(train, data, out, args.checkpoint_every or 10)


def _missing_extras(args) -> str | None:
  """What of the ``train`` extra this run needs and lacks, with the install command.

  Looked up without importing (the run imports each when it first needs it).
  """
  import importlib.util

  missing = []
  needed = ["orbax.checkpoint"]
  if not args.no_plots:
    needed.append("matplotlib")
  for module in needed:
    try:
      found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # the parent package is missing, or not a package
      found = False
    if not found:
      missing.append(module.split(".")[0])
  if not missing:
    return None
  hint = "; or pass --no-plots" if missing == ["matplotlib"] else ""
  return f"this run needs {' and '.join(missing)}, which is not installed: {_EXTRA}{hint}"


def _report(metrics, out) -> str:
  lines = [f"{'split':6s} {'n':>7s} {'accuracy':>9s} {'log-loss':>9s}"]
  for part in ("train", "val", "test"):
    m = metrics[part]
    acc, loss = (f"{v:9.4f}" if v is not None else f"{'-':>9s}"
                 for v in (m["accuracy"], m["log_loss"]))
    lines.append(f"{part:6s} {m['n']:7d} {acc} {loss}")
  lines.append(f"epochs {metrics['epochs']}"
               + (f" (early stop, best epoch {metrics['best_epoch']})"
                  if metrics.get("stopped_early") else "")
               + f", {metrics['seconds_this_session']:.1f} s, backend {metrics['backend']} "
               f"({metrics['device']}"
               + (f", mesh {metrics['mesh']}" if metrics.get("mesh") else "") + ")"
               + (", {count} XLA compilations ({seconds:.1f} s)".format(
                   **metrics["compilations"]) if metrics.get("compilations") else ""))
  lines.append(f"run directory: {out}")
  return "\n".join(lines)


def _start_processes(args) -> None:
  if args.distributed or args.coordinator or args.num_processes or args.process_id is not None:
    from softmax_jax.train._distributed import initialize

    initialize(args.coordinator, args.num_processes, args.process_id)


def _mesh(args):
  if args.mesh and args.data_parallel:
    raise ValueError("give --mesh or --data-parallel, not both")
  if not (args.mesh or args.data_parallel):
    return None
  from softmax_jax.train._distributed import make_mesh, parse_mesh

  return make_mesh(parse_mesh(args.mesh or "data=-1"))


def _compilation_cache(jax) -> None:
  """JAX's persistent compilation cache, so that a repeated run skips the epoch's compilation.

  In ``$JAX_COMPILATION_CACHE_DIR`` if set, else ``~/.cache/softmax_jax/jax`` (or under
  ``$XDG_CACHE_HOME``); ``SOFTMAX_JAX_COMPILATION_CACHE=0`` turns it off.  A command-line
  program's choice; the library sets nothing.
  """
  if os.environ.get("SOFTMAX_JAX_COMPILATION_CACHE") == "0":
    return
  if os.environ.get("JAX_COMPILATION_CACHE_DIR") or jax.config.jax_compilation_cache_dir:
    return
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  jax.config.update("jax_compilation_cache_dir", os.path.join(base, "softmax_jax", "jax"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def _train(args: argparse.Namespace) -> int:
  with StopSignals() as signals:
    return _train_with(args, signals)


def _float64(needed: bool):
  """A context with 64-bit JAX for a float64 run (the process's setting is left alone)."""
  import contextlib

  import jax

  return jax.enable_x64(True) if needed else contextlib.nullcontext()


def _train_with(args: argparse.Namespace, signals: StopSignals) -> int:
  from softmax_jax.train._checkpoint import CheckpointError
  from softmax_jax.train._datasets import DataError

  try:
    settings = _settings(args)
  except (DataError, ValueError) as e:
    print(f"softmax-jax train: {e}", file=sys.stderr)
    return 2
  train, data, out, every = settings
  missing = _missing_extras(args)
  if missing:
    print(f"softmax-jax train: {missing}", file=sys.stderr)
    return 2
  _machine.select_platform(args.device)
  try:
    _start_processes(args)  # before the backend starts
  except (RuntimeError, ValueError) as e:
    print(f"softmax-jax train: jax.distributed.initialize failed: {e}", file=sys.stderr)
    return 2
  problem = _machine.device_problem(args.device)
  if problem:
    print(f"softmax-jax train: {problem}", file=sys.stderr)
    return 2
  import jax

  _compilation_cache(jax)
  from softmax_jax.train._runs import Interrupted, train_run

  try:
    mesh = _mesh(args)
    if mesh is not None and train.batch_size is not None and train.batch_size % mesh.shape.get(
        "data", 1):
      raise ValueError(f"--batch-size {train.batch_size} is not a multiple of the "
                       f"{mesh.shape['data']} devices of the data-parallel mesh")
    progress = Progress(train.epochs, args.quiet)
    try:
      with _float64(train.dtype == "float64"):
        metrics = train_run(train, data, out, checkpoint_every=every, resume=bool(args.resume),
                            overwrite=args.overwrite, plots=not args.no_plots,
                            on_epoch=progress, mesh=mesh, should_stop=signals.stop_requested)
    finally:
      progress.close()
  except Interrupted as e:
    print(f"softmax-jax train: {signals.name}: {e}", file=sys.stderr)
    return signals.exit_code
  except (DataError, CheckpointError, FileExistsError, ValueError) as e:
    print(f"softmax-jax train: {e}", file=sys.stderr)
    return 2
  except ImportError as e:  # an extra found at start but broken (its own imports fail)
    print(f"softmax-jax train: {e}", file=sys.stderr)
    return 2
  except OSError as e:
    print(f"softmax-jax train: {_machine.fault(e)}", file=sys.stderr)
    return 2
  if metrics:  # empty on processes other than 0 of a multi-process run
    print(_report(metrics, out))
  if signals.received is not None:  # came while the outputs were written; they were finished
    print(f"softmax-jax train: {signals.name} after the last epoch: the run in {out} is "
          "complete", file=sys.stderr)
    return signals.exit_code
  return 0
