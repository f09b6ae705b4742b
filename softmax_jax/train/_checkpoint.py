"""Resumable checkpoints of a training run, written with orbax-checkpoint.

A checkpoint holds the whole :class:`~softmax_jax.train.TrainState` (parameters,
optimizer state, PRNG key, epoch and the early-stopping record) and, as JSON,
the metrics history, a fingerprint of the configuration and data it belongs to,
and a SHA-256 digest of every array and of the history.  Restoring checks all three
before handing anything back, so a checkpoint from another run or with damaged
files is refused with a :class:`CheckpointError`, never half-loaded.

Checkpoints are written in the background (orbax's asynchronous checkpointing)
into a temporary folder that orbax renames into place once every file is written,
so a process killed mid-write leaves no checkpoint that a resume would take.
A write takes a tenth of a second or more whatever the size of the state (longer
while a busy training loop holds Python's interpreter lock), far more than an
epoch of a small model, and slows a training loop that runs Python between short
compiled calls by more than its own duration (its threads contend for the
interpreter lock), so writes are paced: at most one is under way, and the next
starts no sooner than ``min_interval`` seconds (default 5) and nine times the last
write's duration after it ended.  A checkpoint that falls due sooner waits, and a
later one replaces it; :meth:`Checkpointer.finish` writes the last state and waits
for it.  A kill loses the epochs since the last checkpoint
written: ``checkpoint_every`` epochs, or about ``min_interval`` seconds' worth when
epochs are fast.

orbax is imported here only; ``import softmax_jax`` does not load it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import pathlib
import signal
import threading
import time
from typing import Any, NamedTuple

import jax
import numpy as np

from softmax_jax._arguments import error_line


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be used: missing, unreadable, damaged or from another run."""


class Restored(NamedTuple):
  """A checkpoint read back: the state and the metrics of the epochs up to it."""

  state: Any
  history: list[dict]


def digest(tree: Any) -> str:
  """SHA-256 over the structure, dtypes, shapes and bytes of every leaf of ``tree``."""
  h = hashlib.sha256(str(jax.tree.structure(tree)).encode())
  for leaf in jax.tree.leaves(tree):
    a = np.asarray(leaf)
    h.update(f"{a.dtype}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


def _history_digest(history: list[dict]) -> str:
  return hashlib.sha256(json.dumps(history, sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def _no_interrupt():
  """Hold back Ctrl-C while a checkpoint is handed to orbax or waited for, then deliver it.

  Only Python's default handler (which raises ``KeyboardInterrupt``) is held
  back; a handler of the program's own (the command line's, which only sets a
  flag), ``SIG_DFL`` (stop at once) and an ignored signal stay as they are.
  """
  if (threading.current_thread() is not threading.main_thread()
      or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
    yield
    return
  caught = []
  previous = signal.signal(signal.SIGINT, lambda *args: caught.append(args))
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)
  if caught:  # now raise the KeyboardInterrupt
    previous(*caught[0])


@contextlib.contextmanager
def _writing(directory):
  """Ctrl-C held back (see :func:`_no_interrupt`), and a failed write as a
  :class:`CheckpointError` naming the folder (an ``OSError``, a fault of the machine
  such as a full disk, stays one)."""
  with _no_interrupt():
    try:
      yield
    except OSError:
      raise
    except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise many types
      raise CheckpointError(f"cannot write a checkpoint in {directory} "
                            f"({error_line(e, 300)})") from e


class _QuietOrbax(logging.Filter):
  """Drops orbax's INFO and DEBUG records (a dozen per checkpoint), keeps its warnings.

  orbax logs through absl, that is through the ``absl`` logger; this filter sits on
  that logger while a :class:`Checkpointer` is open and passes every record that
  does not come from orbax's own files.
  """

  _ORBAX = f"{os.sep}orbax{os.sep}"

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or self._ORBAX not in record.pathname


def _ocp():
  try:
    import orbax.checkpoint as ocp
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("checkpoints need orbax-checkpoint: pip install 'softmax_jax[train]'") from e
  return ocp


_PACE = 9  # a write's duration times this must pass before the next one starts


class _Due(NamedTuple):
  """A checkpoint waiting for the one being written."""

  state: Any
  history: list[dict]


class Checkpointer:
  """Saves and restores training states under ``directory`` (one sub-folder per epoch).

  Use it as a context manager (or call :meth:`close`): closing waits for the
  write under way.

  Args:
    directory: where the checkpoints go (created if needed).
    fingerprint: JSON-able description of the run (configuration and data);
      a checkpoint restores only into a run with the same fingerprint.
    keep: how many of the latest checkpoints to keep.
    min_interval: the least time in seconds from the end of one write to the start
      of the next (but for :meth:`finish`).
  """

  def __init__(self, directory, fingerprint: dict, *, keep: int = 2,
               min_interval: float = 5.0):
    ocp = _ocp()
    self.directory = pathlib.Path(directory).absolute()
    self.fingerprint = fingerprint
    self.min_interval = min_interval
    self._ocp = ocp
    self._due: _Due | None = None
    self._writing_since: float | None = None  # when the write under way started
    self._next_write = -math.inf  # the earliest start of the next one
    self._quiet = _QuietOrbax()
    logging.getLogger("absl").addFilter(self._quiet)
    try:
      self._manager = ocp.CheckpointManager(
          self.directory,
          # (Not cleanup_tmp_directories: its thread can outlive the program and print a
          # traceback at exit.  A killed run's temporary folder is ignored, and cleared
          # with the rest by --overwrite.)
          options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=True))
    except BaseException:
      logging.getLogger("absl").removeFilter(self._quiet)
      raise

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def latest_epoch(self) -> int | None:
    """The epoch of the newest checkpoint written so far, or ``None`` when there is none."""
    return self._manager.latest_step()

  def save(self, state, history: list[dict]) -> None:
    """Start writing ``state`` (and ``history``, the rows up to it) as its epoch's checkpoint.

    Returns once orbax has the host copy; the files are written in the background.
    While an earlier checkpoint is still being written, or its time has not come
    (see the module's notes), ``state`` waits (replacing any that waited before)
    and :meth:`poll` writes it later, or :meth:`finish` a later state.
    A state no newer than the newest checkpoint is ignored.
    """
    epoch = int(state.epoch)
    if epoch <= (self.latest_epoch() or 0):
      return
    self._due = _Due(state, list(history[:epoch]))
    self.poll()

  def poll(self) -> None:
    """Start the checkpoint that waits, if there is one and its time has come.  Cheap:
    called after every epoch."""
    now = time.monotonic()
    if self._writing_since is not None:
      if self._manager.is_saving_in_progress():
        return
      took, self._writing_since = now - self._writing_since, None
      self._next_write = now + max(self.min_interval, _PACE * took)
    if self._due is not None and now >= self._next_write:
      due, self._due = self._due, None
      self._start(due)

  def finish(self, state, history: list[dict]) -> None:
    """Make sure ``state`` is checkpointed: wait for the write under way, write ``state``
    unless a checkpoint of its epoch exists, and wait for that too."""
    epoch = int(state.epoch)
    with _writing(self.directory):
      self._manager.wait_until_finished()
    self._due = None  # an older state than this one
    if (self.latest_epoch() or 0) < epoch:
      self._start(_Due(state, list(history[:epoch])))
      with _writing(self.directory):
        self._manager.wait_until_finished()

  def _start(self, due: _Due) -> None:
    self._writing_since = time.monotonic()
    host_state = jax.device_get(due.state)
    epoch = int(host_state.epoch)
    meta = {"epoch": epoch, "fingerprint": self.fingerprint, "history": due.history,
            "digest": digest(host_state), "history_sha256": _history_digest(due.history)}
    args = self._ocp.args
    with _writing(self.directory):
      self._manager.save(epoch, args=args.Composite(state=args.StandardSave(host_state),
                                                    meta=args.JsonSave(meta)), force=True)

  def restore(self, template) -> Restored:
    """The newest checkpoint; ``template`` (a state) gives the structure.

    Raises:
      CheckpointError: when there is no checkpoint, it cannot be read, it was
        written by a run with another configuration or data, or its arrays do
        not match their recorded digest.
    """
    epoch = self.latest_epoch()
    if epoch is None:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    where = self.directory / str(epoch)
    args = self._ocp.args
    try:
      meta = self._manager.restore(epoch, args=args.Composite(meta=args.JsonRestore()))["meta"]
    except Exception as e:  # noqa: BLE001 - orbax raises many types for damaged files
      raise CheckpointError(f"checkpoint {where} is unreadable ({error_line(e, 300)})") from e
    if not isinstance(meta, dict) or "fingerprint" not in meta or "digest" not in meta:
      raise CheckpointError(f"checkpoint {where} has no valid metadata")
    theirs, ours = meta["fingerprint"], self.fingerprint
    diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    if diff:
      details = "; ".join(f"{k}: checkpoint {theirs.get(k)!r}, this run {ours.get(k)!r}"
                          for k in diff)
      raise CheckpointError(f"checkpoint {where} belongs to another run ({details})")
    abstract = jax.tree.map(lambda a: np.zeros(np.shape(a), np.asarray(a).dtype), template)
    try:
      state = self._manager.restore(
          epoch, args=args.Composite(state=args.StandardRestore(abstract)))["state"]
    except Exception as e:  # noqa: BLE001
      raise CheckpointError(f"checkpoint {where} is unreadable ({error_line(e, 300)})") from e
    state = jax.tree.unflatten(jax.tree.structure(template),
                               [np.asarray(a) for a in jax.tree.leaves(state)])
    if digest(state) != meta["digest"]:
      raise CheckpointError(f"checkpoint {where} is damaged: its arrays do not match the digest "
                            "recorded when it was written")
    if meta.get("history_sha256") != _history_digest(meta["history"]):
      raise CheckpointError(f"checkpoint {where} is damaged: its history does not match the "
                            "digest recorded when it was written")
    if int(state.epoch) != epoch or len(meta["history"]) != epoch:
      raise CheckpointError(f"checkpoint {where} is inconsistent: epoch {int(state.epoch)}, "
                            f"{len(meta['history'])} history rows, folder {epoch}")
    return Restored(state, meta["history"])

  def close(self) -> None:
    """Wait for the write under way (a checkpoint still waiting is dropped) and close."""
    try:
      with _writing(self.directory):
        self._manager.close()
    finally:
      logging.getLogger("absl").removeFilter(self._quiet)


class NoCheckpoints:
  """Stands in for :class:`Checkpointer` where checkpoints are not written."""

  def __enter__(self) -> NoCheckpoints:
    return self

  def __exit__(self, *exc) -> None:
    pass

  def save(self, state, history) -> None:
    pass

  def poll(self) -> None:
    pass

  def finish(self, state, history) -> None:
    pass
