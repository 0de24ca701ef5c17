"""SIGTERM (preemption, `kill`, a scheduler's timeout) and Ctrl-C: a checkpoint, not lost work.

The handler only records the signal; the train loop reads it once per step (a
Python attribute, no device sync), saves a checkpoint at the step it has
reached, and stops: after SIGTERM with `errors.Preempted` (exit code 143),
after SIGINT with `errors.Interrupted` (exit code 130). Rerunning the same
command resumes from that checkpoint. A second Ctrl-C does not wait for the
step or the save: SIGINT's default action ends the process at once (a shell
shows status 130; the trainer's lock is dropped by the kernel, and a
half-written checkpoint is a temporary directory the next trainer deletes).

Multi-host jobs keep JAX's own preemption notifier (the loop asks the
checkpoint manager for the synchronised preemption point instead): a Python
handler here would replace it, and hosts would disagree on the step.
"""

from __future__ import annotations

import signal
import threading

from absl import logging

from ds2f_jax import errors

_NAMES = {signal.SIGTERM: 'SIGTERM', signal.SIGINT: 'SIGINT'}


class StopSignals:
  """Context manager: `requested` becomes 'SIGTERM' or 'SIGINT' once one has arrived."""

  def __init__(self, enabled: bool = True):
    self.requested: str | None = None
    self._enabled = enabled
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    name = _NAMES[signum]
    if self.requested is None:
      logging.warning('%s: saving a checkpoint after the current step, then exiting%s.', name,
                      ' (Ctrl-C again to exit at once)' if signum == signal.SIGINT else '')
    if signum == signal.SIGINT or self.requested is None:
      self.requested = name
    if signum == signal.SIGINT:
      # A second Ctrl-C ends the process by the default action, at once, even while
      # it waits inside XLA or a checkpoint write (where no Python handler would run).
      signal.signal(signal.SIGINT, signal.SIG_DFL)

  def __enter__(self) -> StopSignals:
    # Signal handlers can only be installed from the main thread; elsewhere
    # (a notebook's worker thread) the signals keep their default meaning.
    if self._enabled and threading.current_thread() is threading.main_thread():
      for signum in _NAMES:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}

  def stop(self, step: int, directory) -> BaseException:
    """The exception that ends the run after the checkpoint at `step` was saved."""
    what = 'interrupted' if self.requested == 'SIGINT' else 'preempted'
    message = (f'{what} ({self.requested or "SIGTERM"}) at step {step}: checkpoint saved in '
               f'{directory}; run the same command to resume')
    if self.requested == 'SIGINT':
      return errors.Interrupted(message, step)
    return errors.Preempted(message, step)
