"""SIGINT and SIGTERM during ``softmax-jax train``: the first asks the run to stop."""

from __future__ import annotations

import contextlib
import os
import signal


class StopSignals:
  """A context in which SIGINT and SIGTERM ask the run to stop.

  The run then stops after the epoch in progress, checkpoints it and prints the
  resume hint (exit 130 or 143).  A second signal stops the process at once by
  the signal's default action (the checkpoints stay whole: orbax writes each
  into a temporary folder and renames it into place once complete).
  """

  def __init__(self):
    self.received: int | None = None
    self._previous: dict = {}

  def __enter__(self) -> StopSignals:
    for sig in (signal.SIGINT, signal.SIGTERM):
      with contextlib.suppress(ValueError):  # not the main thread: leave them be
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame) -> None:
    if self.received is not None:  # the second one: stop now, by the default action
      signal.signal(signum, signal.SIG_DFL)
      os.kill(os.getpid(), signum)
      return
    self.received = signum

  def stop_requested(self) -> bool:
    """Whether a signal came; from then on a further one takes its default action at once.

    (Not set in the handler itself: Python reports a signal that is already pending
    when its handler becomes ``SIG_DFL`` as an ``OSError``.)
    """
    if self.received is None:
      return False
    for sig in self._previous:
      signal.signal(sig, signal.SIG_DFL)
    return True

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  @property
  def name(self) -> str:
    """The name of the signal received (``SIGINT`` when none was)."""
    return "SIGINT" if self.received is None else signal.Signals(self.received).name

  @property
  def exit_code(self) -> int:
    """128 + the signal's number, as a shell reports a process it stopped (130 by default)."""
    return 128 + (signal.SIGINT if self.received is None else self.received)
