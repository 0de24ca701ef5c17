"""How a run can stop short of success, and the exit code `main.py` gives each.

Kept free of JAX imports so that `main.py` can map exceptions to exit codes
without paying for them. docs/reliability.md lists every case.
"""

EXIT_BAD_INPUT = 2  # One `error:` line naming the key, file or value at fault.
EXIT_NONFINITE = 3  # Training diverged; rerunning the same command would too.
EXIT_PREEMPTED = 143  # 128 + SIGTERM: a checkpoint was saved; rerun to resume.


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
