"""One trainer per workdir: WORKDIR/train.lock, held with flock for the whole run.

Two trainers writing one workdir corrupt each other's checkpoints and logs, and
the second one's startup would delete the first one's in-flight checkpoint
(stale temporary directories are cleaned at startup). The kernel drops an
flock when its process dies, even by kill -9, so a lock left by a dead trainer
is taken over (with a warning naming it) and never needs deleting by hand. On
filesystems without flock the file's pid is checked for liveness instead.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import os
import socket

from absl import logging

from ds2f_jax import errors

LOCK_NAME = 'train.lock'
# flock is unavailable on some network filesystems; these mean "not supported".
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def _owner() -> str:
  now = datetime.datetime.now().isoformat(timespec='seconds')
  return f'pid={os.getpid()} host={socket.gethostname()} started={now}'


def _parse(text: str) -> dict:
  return dict(p.split('=', 1) for p in text.split() if '=' in p)


def _alive_here(info: dict) -> bool:
  """Whether the owner named in a lock file might still run (unknown = True)."""
  if info.get('host') != socket.gethostname():
    return True
  try:
    os.kill(int(info.get('pid', '')), 0)
  except (ValueError, ProcessLookupError):
    return False
  except PermissionError:  # Alive, owned by another user.
    return True
  return True


def _read(fd: int) -> str:
  os.lseek(fd, 0, os.SEEK_SET)
  return os.read(fd, 4096).decode('utf-8', 'replace').strip()


class WorkdirLock:
  """Exclusive ownership of a workdir by this process."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_NAME)
    self._fd = None

  def _refuse(self, owner: str) -> errors.WorkdirLocked:
    return errors.WorkdirLocked(
        f'workdir {self.workdir} is in use by another trainer ({owner or "owner unknown"}); '
        f'wait for it to finish or stop it (lock file: {self.path})')

  def acquire(self) -> None:
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        if not self._lock(fd):
          owner = _read(fd)
          raise self._refuse(owner)
        # The holder may have unlinked the file between our open and flock.
        if os.path.exists(self.path) and os.path.samestat(os.fstat(fd), os.stat(self.path)):
          break
      except BaseException:
        os.close(fd)
        raise
      os.close(fd)
    previous = _read(fd)
    if previous:
      logging.warning('Took over %s left by a trainer that is gone (%s).', self.path, previous)
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (_owner() + '\n').encode())
    self._fd = fd

  def _lock(self, fd: int) -> bool:
    """flock; False if another process holds it. Without flock: a pid check."""
    try:
      import fcntl  # pylint: disable=g-import-not-at-top
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      return True
    except BlockingIOError:
      return False
    except (ImportError, OSError) as e:
      if isinstance(e, OSError) and e.errno not in _NO_FLOCK:
        raise
    return not _alive_here(_parse(_read(fd)))

  def release(self) -> None:
    if self._fd is None:
      return
    with contextlib.suppress(FileNotFoundError):
      os.unlink(self.path)  # Before closing, while still ours.
    os.close(self._fd)
    self._fd = None


@contextlib.contextmanager
def hold(workdir: str, enabled: bool = True):
  """Holds the workdir's lock for the block; `enabled=False` (non-primary hosts of a
  multi-host job, which share process 0's workdir) is a no-op."""
  if not enabled:
    yield None
    return
  lock = WorkdirLock(workdir)
  lock.acquire()
  try:
    yield lock
  finally:
    lock.release()
