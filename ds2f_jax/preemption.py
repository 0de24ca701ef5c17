"""SIGTERM (preemption, `kill`, a scheduler's timeout) becomes a checkpoint, not lost work.

The handler only sets a flag; the train loop reads it once per step (a Python
bool, no device sync), saves a checkpoint at the step it has reached, and
raises `errors.Preempted`, which `main.py` turns into exit code 143. Rerunning
the same command resumes from that checkpoint.

Multi-host jobs keep JAX's own preemption notifier (the loop asks the
checkpoint manager for the synchronised preemption point instead): a Python
handler here would replace it, and hosts would disagree on the step.
"""

from __future__ import annotations

import signal
import threading

from absl import logging


class SigtermWatch:
  """Context manager: `requested` turns True once SIGTERM has arrived."""

  def __init__(self, enabled: bool = True):
    self.requested = False
    self._enabled = enabled
    self._previous = None
    self._installed = False

  def _handle(self, signum, frame):
    del signum, frame
    if not self.requested:
      logging.warning('SIGTERM: saving a checkpoint after the current step, then exiting.')
    self.requested = True

  def __enter__(self) -> SigtermWatch:
    # Signal handlers can only be installed from the main thread; elsewhere
    # (a notebook's worker thread) SIGTERM keeps its default meaning.
    if self._enabled and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
      self._installed = True
    return self

  def __exit__(self, *exc) -> None:
    if self._installed:
      signal.signal(signal.SIGTERM, self._previous)
      self._installed = False
