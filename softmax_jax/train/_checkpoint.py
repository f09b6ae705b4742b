"""Resumable checkpoints of a training run, written with orbax-checkpoint.

A checkpoint holds the whole :class:`~softmax_jax.train.TrainState` (parameters,
optimizer state, PRNG key, epoch and the early-stopping record) and, as JSON,
the metrics history, a fingerprint of the configuration and data it belongs to,
and a SHA-256 digest of every array and of the history.  Restoring checks all three
before handing
anything back, so a checkpoint from another run or with damaged files is
refused with a :class:`CheckpointError`, never half-loaded.

orbax is imported here only; ``import softmax_jax`` does not load it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import pathlib
import signal
import threading
from typing import Any

import jax
import numpy as np


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be used: missing, unreadable, damaged or from another run."""


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
  """Hold back Ctrl-C while a checkpoint is written, then deliver it.

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


def _short(e: Exception, limit: int = 300) -> str:
  text = f"{type(e).__name__}: {e}"
  return text if len(text) <= limit else text[:limit] + " ..."


def _ocp():
  try:
    import orbax.checkpoint as ocp
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("checkpoints need orbax-checkpoint: pip install 'softmax_jax[train]'") from e
  logging.getLogger("absl").setLevel(logging.WARNING)
  return ocp


class Checkpointer:
  """Saves and restores training states under ``directory`` (one sub-folder per epoch).

  Args:
    directory: where the checkpoints go (created if needed).
    fingerprint: JSON-able description of the run (configuration and data);
      a checkpoint restores only into a run with the same fingerprint.
    keep: how many of the latest checkpoints to keep.
  """

  def __init__(self, directory, fingerprint: dict, *, keep: int = 2):
    ocp = _ocp()
    self.directory = pathlib.Path(directory).absolute()
    self.fingerprint = fingerprint
    self._ocp = ocp
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=False))

  def latest_epoch(self) -> int | None:
    """The epoch of the newest checkpoint, or ``None`` when there is none."""
    return self._manager.latest_step()

  def save(self, state, history: list[dict]) -> None:
    """Write ``state`` (and the history up to it) as the checkpoint of its epoch."""
    epoch = int(state.epoch)
    host_state = jax.device_get(state)
    meta = {"epoch": epoch, "fingerprint": self.fingerprint, "history": history,
            "digest": digest(host_state), "history_sha256": _history_digest(history)}
    args = self._ocp.args
    with _no_interrupt():
      self._manager.save(epoch, args=args.Composite(state=args.StandardSave(host_state),
                                                    meta=args.JsonSave(meta)), force=True)
      self._manager.wait_until_finished()

  def restore(self, template) -> tuple[Any, list[dict]]:
    """The newest checkpoint as ``(state, history)``; ``template`` gives the structure.

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
      raise CheckpointError(f"checkpoint {where} is unreadable ({_short(e)})") from e
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
      raise CheckpointError(f"checkpoint {where} is unreadable ({_short(e)})") from e
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
    return state, meta["history"]

  def close(self) -> None:
    self._manager.close()
