"""Training runs on disk: the data, the training with its checkpoints, the outputs.

A run directory holds::

    config.json     the exact configuration (data, training, checkpointing)
    model.json      feature and class names, standardisation, backend
    params.npz      the trained parameters
    metrics.json    train / validation / test accuracy and log-loss, timing
    history.csv     one row per epoch
    curves.png, confusion_matrix.png, decision_regions.png (iris and 2-feature data)
    checkpoints/    orbax checkpoints, at most every ``checkpoint_every`` epochs and at the end
    manifest.json   written last: SHA-256 of every other output, package version
    .lock           held (``flock``) by the run writing the directory

Every file is written under a temporary name and renamed; ``predict`` and
``--resume`` check the manifest first (see ``_rundir``).  Checkpoints carry
their own digest (``_checkpoint``).  The outputs are written by ``_outputs``;
finished runs are read back by ``_predict``.

``softmax-jax train`` is a thin wrapper over :func:`train_run`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np

from softmax_jax.train import _datasets, _loop, _outputs, _rundir
from softmax_jax.train._checkpoint import (
  Checkpointer,
  CheckpointError,
  NoCheckpoints,
  Restored,
  digest,
)
from softmax_jax.train._config import TrainConfig
from softmax_jax.train._rundir import RunError

_IGNORED_IN_FINGERPRINT = ("epochs",)


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Which data a run trains on and how it is split.

  ``n_samples``, ``n_features`` and ``n_classes`` apply to ``blobs`` only,
  ``label`` to CSV files only.
  """

  dataset: str = "iris"
  label: int | str = -1
  n_samples: int = 1000
  n_features: int = 2
  n_classes: int = 3
  val_fraction: float = 0.15
  test_fraction: float = 0.2
  seed: int = 0


@dataclasses.dataclass
class Prepared:
  """A data set split and standardised with the training split's statistics."""

  dataset: _datasets.Dataset
  split: _datasets.Split
  scaler: _datasets.Standardizer

  def arrays(self, part: str, dtype=np.float32):
    ds = getattr(self.split, part)
    return self.scaler.transform(ds.x).astype(dtype), ds.y.astype(np.int32)


def prepare(data: DataConfig) -> Prepared:
  """Load, split (stratified, from ``data.seed``) and standardise (on the training split)."""
  ds = _datasets.load_dataset(data.dataset, label=data.label, n_samples=data.n_samples,
                          n_features=data.n_features, n_classes=data.n_classes, seed=data.seed)
  parts = _datasets.split(ds, val_fraction=data.val_fraction, test_fraction=data.test_fraction,
                      seed=data.seed)
  for part, fraction in (("val", data.val_fraction), ("test", data.test_fraction)):
    if fraction > 0 and getattr(parts, part).n_samples == 0:
      raise _datasets.DataError(
          f"{data.dataset}: {ds.n_samples} samples in {ds.n_classes} classes are too few for "
          f"the split: the {part} part (--{part}-fraction {fraction}) would be empty; give "
          f"more data or --{part}-fraction 0")
  try:
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused just below
      scaler = _datasets.Standardizer.fit(parts.train.x)
  except ValueError:  # finite values whose mean or variance overflows float64
    with np.errstate(over="ignore", invalid="ignore"):
      x = parts.train.x
      bad = ~(np.isfinite(x.mean(axis=0)) & np.isfinite(x.std(axis=0)))
    j = int(np.flatnonzero(bad)[0]) if bad.any() else 0
    raise _datasets.DataError(
        f"{data.dataset}, column {ds.feature_names[j]!r}: values up to "
        f"{float(np.abs(x[:, j]).max()):.3g} are too large: their mean or variance overflows "
        "float64; rescale the column") from None
  return Prepared(ds, parts, scaler)


def _fingerprint(config: TrainConfig, arrays) -> dict:
  """What a checkpoint must match to be resumed: the configuration and all the data."""
  fp = {k: v for k, v in config.to_dict().items() if k not in _IGNORED_IN_FINGERPRINT}
  fp["data_sha256"] = digest(arrays)
  return fp


class Interrupted(Exception):
  """Training was interrupted; a checkpoint of the last finished epoch was written."""

  def __init__(self, epoch: int, out: pathlib.Path):
    if epoch:
      text = (f"interrupted after epoch {epoch} (checkpoint written); continue with "
              f"`softmax-jax train --resume {out}`")
    else:
      text = "interrupted before the first epoch finished; nothing to resume"
    super().__init__(text)
    self.epoch = epoch


def _check_out(out: pathlib.Path, resume: bool, overwrite: bool) -> None:
  """Refuse an unusable run directory before any work (checked again under the lock)."""
  flag = "--resume" if resume else "--out"
  if out.exists() and not out.is_dir():
    raise RunError(f"{flag} {out} is a file, not a directory")
  if resume:
    if not (out / "config.json").exists():
      raise CheckpointError(f"--resume {out}: no run there (config.json is missing)")
  elif _rundir.holds_files(out) and not overwrite:
    raise FileExistsError(f"{out} already holds files; choose another --out, continue it with "
                          "--resume, or pass --overwrite")
  probe = out
  while not probe.exists() and probe != probe.parent:
    probe = probe.parent
  if not probe.is_dir():
    raise RunError(f"{flag} {out}: {probe} is a file, so the directory cannot be created")
  if not os.access(probe, os.W_OK | os.X_OK):
    raise RunError(f"{flag} {out}: {probe} is not writable; choose another --out")


def train_run(config: TrainConfig, data: DataConfig, out, *, checkpoint_every: int = 10,
              resume: bool = False, overwrite: bool = False, plots: bool = True,
              on_epoch: Callable[[dict], None] | None = None,
              stop_after: int | None = None, mesh=None,
              should_stop: Callable[[], bool] | None = None) -> dict:
  """Train, checkpoint and write every output of a run into ``out``; returns the metrics.

  Args:
    config: the training configuration.
    data: the data configuration.
    out: the run directory.
    checkpoint_every: checkpoint every this many epochs, and at the end.  Checkpoints
      are written in the background, one at a time and at most one every 5 seconds:
      one that falls due sooner waits, and a later one replaces it.
    resume: continue from the newest checkpoint in ``out`` (which must have
      been written with the same configuration and data).
    overwrite: allow ``out`` to hold files already (without ``resume``).
    plots: draw the figures (needs matplotlib).
    on_epoch: called with each epoch's metrics row (progress bars).
    stop_after: stop (as an interruption) once this many epochs are done; for tests
      and for splitting long runs.
    mesh: optional ``jax.sharding.Mesh`` with a ``data`` axis for data-parallel
      training (see :func:`softmax_jax.train.fit`).  With several processes
      (after ``jax.distributed.initialize``) process 0 writes the outputs and
      no checkpoints are written.
    should_stop: polled before the first epoch and after every epoch; when it
      returns true the run stops as on an interruption (the command line sets
      it from SIGINT and SIGTERM).

  Raises:
    Interrupted: on ``KeyboardInterrupt``, ``stop_after`` or ``should_stop``,
      after checkpointing.
    CheckpointError: when ``resume`` finds no usable checkpoint.
    RunError: ``out`` is in use by another run, cannot be written, or (with
      ``resume``) does not match its manifest.
  """
  out = pathlib.Path(out)
  multi = jax.process_count() > 1
  if checkpoint_every < 1:
    raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
  _check_out(out, resume, overwrite)
  if multi:  # every process has checked the directory before process 0 writes to it
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("softmax_jax.train_run: output directory checked")
  if multi and resume:
    raise CheckpointError("resuming is supported in single-process runs only")
  if mesh is not None:
    _loop.check_data_parallel(config, mesh)
  prep = prepare(data)  # bad data is refused before anything is written
  writer = jax.process_index() == 0
  with (_rundir.RunLock(out) if writer else contextlib.nullcontext(),
        _outputs.Compilations() as compilations):
    return _train_locked(config, data, out, prep, checkpoint_every=checkpoint_every,
                         resume=resume, overwrite=overwrite, plots=plots, on_epoch=on_epoch,
                         stop_after=stop_after, should_stop=should_stop, mesh=mesh,
                         multi=multi, writer=writer, compilations=compilations)


def _train_locked(config, data, out, prep, *, checkpoint_every, resume, overwrite, plots,
                  on_epoch, stop_after, should_stop, mesh, multi, writer,
                  compilations) -> dict:
  """The part of :func:`train_run` that runs while holding the directory's lock."""
  dtype = np.dtype(config.dtype)
  x, y = prep.arrays("train", dtype)
  n_classes = prep.dataset.n_classes
  if writer:
    _make_room(out, resume, overwrite)
  ckpt = (NoCheckpoints() if multi else
          Checkpointer(out / "checkpoints",
                       _fingerprint(config, [prep.arrays(p, dtype) for p in _outputs.PARTS])))
  with ckpt:
    restored = _restore(ckpt, config, x.shape[1], n_classes, out) if resume else None
    # Written only once the checkpoint (if any) is known to belong to this configuration;
    # until the final manifest the directory reads as incomplete.
    if writer:
      _rundir.remove_manifest(out)
      _rundir.write_json(out / "config.json",
                         {"train": config.to_dict(), "data": dataclasses.asdict(data),
                          "checkpoint_every": checkpoint_every})
      _rundir.write_manifest(out, ["config.json"], complete=False)
    session = _train(config, (x, y), prep.arrays("val", dtype), n_classes, restored, ckpt,
                     checkpoint_every=checkpoint_every, on_epoch=on_epoch,
                     stop_after=stop_after, should_stop=should_stop, mesh=mesh)
  if session.interrupted:
    raise Interrupted(session.epoch, out)
  result = session.trainer.result()
  if mesh is not None:  # replicated global arrays -> host copies for the outputs
    result.params = jax.device_get(result.params)
  if not writer:
    return {}
  return _outputs.write_outputs(out, config, data, prep, result, session.seconds, plots,
                                mesh=None if mesh is None else dict(mesh.shape),
                                compilations=compilations)


def _make_room(out: pathlib.Path, resume: bool, overwrite: bool) -> None:
  """Check, under the lock, that ``out`` may be written: the run being resumed is the one
  its files say it is, or an earlier run's files may go (``overwrite``) and are removed."""
  if resume:
    _rundir.verify_manifest(out, complete=False, need=("config.json",))
  elif _rundir.holds_files(out):
    if not overwrite:  # written by a run that finished while this one loaded its data
      raise FileExistsError(f"{out} already holds files; choose another --out, continue it "
                            "with --resume, or pass --overwrite")
    _rundir.clear(out)  # so that a later --resume cannot find a stale checkpoint


def _restore(ckpt, config: TrainConfig, n_features: int, n_classes: int, out) -> Restored:
  """The newest checkpoint, if it can continue to ``config.epochs``."""
  restored = ckpt.restore(_loop.init_state(config, n_features, n_classes))
  done = int(restored.state.epoch)
  if done > config.epochs:
    raise ValueError(f"the run in {out} has done {done} epochs already; "
                     f"--epochs {config.epochs} would not continue it")
  return restored


class _Session(NamedTuple):
  """What the training of this session did."""

  trainer: _loop.Trainer | None  # None when it stopped before the first epoch began
  epoch: int  # the epochs done (the checkpoint's, when it stopped before any)
  interrupted: bool  # stopped by stop_after, should_stop or Ctrl-C
  seconds: float


def _train(config, train, val, n_classes, restored: Restored | None, ckpt, *,
           checkpoint_every, on_epoch, stop_after, should_stop, mesh) -> _Session:
  """Train from ``restored`` (or from the start) and checkpoint the last state."""
  start = time.perf_counter()
  trainer, interrupted = None, False
  try:
    interrupted = should_stop is not None and should_stop()
    if not interrupted:
      state, history = restored if restored is not None else (None, [])
      trainer = _loop.Trainer(*train, config, val=val, n_classes=n_classes, state=state,
                              history=history, mesh=mesh)
      interrupted = _train_epochs(trainer, ckpt, checkpoint_every=checkpoint_every,
                                  on_epoch=on_epoch, stop_after=stop_after,
                                  should_stop=should_stop)
  except KeyboardInterrupt:  # Ctrl-C under Python's own handler (the library, not the CLI)
    interrupted = True
  seconds = time.perf_counter() - start
  if trainer is not None:
    ckpt.finish(trainer.state, trainer.history)
    return _Session(trainer, trainer.epoch, interrupted, seconds)
  return _Session(None, 0 if restored is None else int(restored.state.epoch), interrupted,
                  seconds)


def _train_epochs(trainer: _loop.Trainer, ckpt, *, checkpoint_every: int,
                  on_epoch: Callable[[dict], None] | None, stop_after: int | None,
                  should_stop: Callable[[], bool] | None) -> bool:
  """Run the epochs left, asking for a checkpoint every ``checkpoint_every``; returns
  whether the run stopped because ``stop_after`` or ``should_stop`` asked it to."""
  while not trainer.done:
    row = trainer.step()
    if row["epoch"] % checkpoint_every == 0:
      ckpt.save(trainer.state, trainer.history)
    else:
      ckpt.poll()  # start a checkpoint that waited for the one being written
    if on_epoch is not None:
      on_epoch(row)
    if trainer.done:
      break
    if ((stop_after is not None and stop_after <= row["epoch"])
        or (should_stop is not None and should_stop())):
      return True
  return False
