"""How a run can stop short of success, and the exit code `main.py` gives each.

Kept free of JAX imports so that `main.py` can map exceptions to exit codes
without paying for them. docs/reliability.md lists every case.
"""

EXIT_BAD_INPUT = 2  # One `error:` line naming the key, file or value at fault.
EXIT_NONFINITE = 3  # Training diverged; rerunning the same command would too.
EXIT_PREEMPTED = 143  # 128 + SIGTERM: a checkpoint was saved; rerun to resume.
EXIT_INTERRUPTED = 130  # 128 + SIGINT (Ctrl-C): likewise.


class WorkdirLocked(RuntimeError):
  """Another live trainer holds the workdir's lock."""


class NonFiniteError(FloatingPointError):
  """A train step's loss or gradients became NaN or Inf."""


class CheckpointSaveError(OSError):
  """A checkpoint could not be written (disk full, quota, ...); its partial
  files were removed, so no checkpoint that looks complete is left behind."""


class Preempted(Exception):
  """SIGTERM arrived: a checkpoint at `step` was saved before stopping."""

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step


class Interrupted(SystemExit):
  """Ctrl-C (SIGINT) arrived: a checkpoint at `step` was saved and the line was printed.

  A SystemExit with code 130, the status a shell gives Ctrl-C: it leaves every
  entry point (main.py, ablate, a notebook) without a traceback and without
  being caught by `except Exception` on the way out.
  """

  def __init__(self, message: str, step: int):
    super().__init__(EXIT_INTERRUPTED)
    self.message = message
    self.step = step

  def __str__(self) -> str:
    return self.message


class OutOfMemoryError(ValueError):
  """A device allocation failed (XLA RESOURCE_EXHAUSTED); the message names the batch, the
  sizes and what to lower. A ValueError: the configuration asks for more than fits."""
