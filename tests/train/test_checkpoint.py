"""Checkpoints: paced background writes, the last state always written, what restore refuses."""

import contextlib
import json
import logging
import os
import shutil
import signal

import numpy as np
import pytest

from softmax_jax.train import TrainConfig, init_state, train_run
from softmax_jax.train._checkpoint import Checkpointer, CheckpointError, _no_interrupt

STATE = init_state(TrainConfig(epochs=100), 4, 3)


def _at(epoch):
  return STATE._replace(epoch=np.int32(epoch))


def _rows(n):
  return [{"epoch": e, "train_loss": 1.0 / e} for e in range(1, n + 1)]


def _folders(directory):
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def test_writes_are_paced_and_finish_writes_the_last_state(tmp_path):
  history = _rows(9)
  with Checkpointer(tmp_path / "c", {"run": 1}, min_interval=3600) as ckpt:
    ckpt.save(_at(3), history)  # the first write starts at once
    ckpt.save(_at(6), history)  # within the interval: waits
    ckpt.poll()
    ckpt.finish(_at(9), history)  # replaces the one waiting, and waits for the write
    assert ckpt.latest_epoch() == 9
  assert _folders(tmp_path / "c") == [3, 9]
  with Checkpointer(tmp_path / "c", {"run": 1}) as ckpt:
    state, rows = ckpt.restore(STATE)
  assert int(state.epoch) == 9 and rows == history
  assert all(np.array_equal(a, b) for a, b in zip(state.params.values(),
                                                  STATE.params.values(), strict=True))


def test_a_checkpoint_that_waited_is_written_once_its_time_comes(tmp_path):
  """The next write waits at least nine times the last one's duration after it ended."""
  import time

  history = _rows(4)
  with Checkpointer(tmp_path / "c", {"run": 1}, min_interval=0) as ckpt:
    ckpt.save(_at(2), history)
    ckpt.save(_at(4), history)  # the first write is under way or just done: waits
    assert ckpt.latest_epoch() == 2
    deadline = time.monotonic() + 60
    while ckpt.latest_epoch() != 4:  # polled, as after every epoch, until its time comes
      assert time.monotonic() < deadline
      time.sleep(0.02)
      ckpt.poll()
    ckpt.finish(_at(4), history)  # already checkpointed: nothing more is written
    ckpt.save(_at(3), history)  # older than the newest checkpoint: ignored
  assert _folders(tmp_path / "c") == [2, 4]


def test_a_half_written_checkpoint_is_not_restored(full_run, tmp_path):
  """What a kill during a write leaves: orbax's temporary folder, never taken for a
  checkpoint (orbax renames a folder into place once all of it is written)."""
  out = tmp_path / "run"
  shutil.copytree(full_run[0], out)
  partial = out / "checkpoints" / "13.orbax-checkpoint-tmp-1700000000000000"
  shutil.copytree(out / "checkpoints" / "12", partial)
  (partial / "meta" / "metadata").unlink()
  with Checkpointer(out / "checkpoints", {}) as ckpt:
    assert ckpt.latest_epoch() == 12


# orbax's background event loop reports a closed loop after a failed read; harmless here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("damage", ["array", "metadata", "history", "empty"])
def test_damaged_checkpoint_is_refused(full_run, run_config, tmp_path, damage):
  cfg, data = run_config
  out = tmp_path / "run"
  shutil.copytree(full_run[0], out)
  latest = out / "checkpoints" / "12"
  if damage == "array":
    for f in (latest / "state").rglob("*"):
      if f.is_file() and f.parent.name == "d":
        data_bytes = bytearray(f.read_bytes())
        data_bytes[len(data_bytes) // 2] ^= 0xFF
        f.write_bytes(bytes(data_bytes))
    match = "damaged|unreadable"
  elif damage == "metadata":
    (latest / "meta" / "metadata").write_text("{not json")
    match = "unreadable|no valid"
  elif damage == "history":
    meta = json.loads((latest / "meta" / "metadata").read_text())
    meta["history"][3]["train_loss"] = 0.125
    (latest / "meta" / "metadata").write_text(json.dumps(meta))
    match = "history does not match"
  else:
    shutil.rmtree(out / "checkpoints")
    (out / "checkpoints").mkdir()
    match = "no checkpoint"
  longer = TrainConfig(**{**cfg.to_dict(), "epochs": 14})
  with pytest.raises(CheckpointError, match=match):
    train_run(longer, data, out, resume=True, plots=False)


@pytest.mark.internals
def test_orbax_info_records_are_dropped_while_a_checkpointer_is_open(tmp_path):
  absl = logging.getLogger("absl")

  def passes(path, level):
    record = logging.LogRecord("absl", level, path, 1, "message", None, None)
    return all(f.filter(record) for f in absl.filters)

  orbax_file = os.path.join("site-packages", "orbax", "checkpoint", "checkpoint_manager.py")
  with Checkpointer(tmp_path / "c", {}):
    assert not passes(orbax_file, logging.INFO)
    assert passes(orbax_file, logging.WARNING)
    assert passes(os.path.join("site-packages", "mine", "app.py"), logging.INFO)
  assert passes(orbax_file, logging.INFO)  # the filter goes with the checkpointer
  assert logging.getLogger("absl").level == logging.NOTSET  # no level set for the program


@pytest.mark.internals
@pytest.mark.parametrize("handler", ["default", "ignore"])
def test_ctrl_c_waits_for_the_checkpoint_write(handler):
  before = signal.default_int_handler if handler == "default" else signal.SIG_IGN
  saved = signal.signal(signal.SIGINT, before)
  try:
    finished = False
    expect = pytest.raises(KeyboardInterrupt) if handler == "default" else contextlib.nullcontext()
    with expect:
      with _no_interrupt():
        os.kill(os.getpid(), signal.SIGINT)
        finished = True  # reached: the interrupt is held back until the block ends
    assert finished
    assert signal.getsignal(signal.SIGINT) is before  # an ignored Ctrl-C stays ignored
  finally:
    signal.signal(signal.SIGINT, saved)


@pytest.mark.internals
def test_a_failed_write_is_a_checkpoint_error_and_a_machine_fault_stays_one(tmp_path):
  import errno

  def fail(error):
    def save(*args, **kwargs):
      raise error
    return save

  with Checkpointer(tmp_path / "c", {}) as ckpt:
    ckpt._manager.save = fail(RuntimeError("tensorstore: boom"))
    with pytest.raises(CheckpointError, match=r"cannot write a checkpoint in .*c \(RuntimeError: "
                                              "tensorstore: boom\\)"):
      ckpt.save(_at(1), _rows(1))
    ckpt._manager.save = fail(OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(OSError, match="No space left"):
      ckpt.finish(_at(2), _rows(2))
