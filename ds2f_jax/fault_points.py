"""Named pause points for the reliability tests; inert unless DS2F_FAULT_PAUSE is set.

A test harness kills a trainer subprocess at an exact point (between
checkpoints, inside an asynchronous checkpoint save, during evaluation) by
starting it with

  DS2F_FAULT_PAUSE=save:4 DS2F_FAULT_DIR=/some/dir python main.py ...

When the trainer reaches point 'save' at step 4 it writes
DIR/paused.save.4 (holding its pid) and waits until DIR/resume.save.4
exists; meanwhile the harness sends kill -9 or SIGTERM, or inspects the
workdir. Points: 'step' (after step N's logging, evaluation and checkpoint
calls), 'eval' (before step N's evaluation) and 'save' (inside the background
save of step N, after every file is written and before the commit rename).

`DS2F_FAULT_OOM=N` makes training step N fail as a real out-of-memory does:
`out_of_memory(N)` asks XLA for a 4 TiB buffer, and XLA's allocator raises
its own RESOURCE_EXHAUSTED error (the type and text a too-large batch gets).
"""

from __future__ import annotations

import os
import sys
import time

PAUSE_ENV = 'DS2F_FAULT_PAUSE'
DIR_ENV = 'DS2F_FAULT_DIR'
OOM_ENV = 'DS2F_FAULT_OOM'
_OOM_BYTES = 2**42  # More than any test machine has: the allocation fails at once.
_MAX_PAUSE_S = 600  # A harness that died must not leave the trainer waiting forever.
_EXIT_ABANDONED = 97


def enabled() -> bool:
  return bool(os.environ.get(PAUSE_ENV))


def _wanted(point: str, step: int) -> bool:
  spec = os.environ.get(PAUSE_ENV, '')
  return f'{point}:{int(step)}' in (s.strip() for s in spec.split(','))


def reached(point: str, step: int) -> None:
  """Pauses here if the environment asks for `point` at `step`; otherwise nothing."""
  if not _wanted(point, step):
    return
  where = os.environ.get(DIR_ENV) or '.'
  name = f'{point}.{int(step)}'
  with open(os.path.join(where, f'paused.{name}.part'), 'w') as f:
    f.write(str(os.getpid()))
  os.replace(os.path.join(where, f'paused.{name}.part'), os.path.join(where, f'paused.{name}'))
  print(f'fault point: paused at {name} (pid {os.getpid()})', file=sys.stderr, flush=True)
  deadline = time.monotonic() + _MAX_PAUSE_S
  while not os.path.exists(os.path.join(where, f'resume.{name}')):
    if time.monotonic() > deadline:
      print(f'fault point: nobody resumed {name}; exiting', file=sys.stderr, flush=True)
      os._exit(_EXIT_ABANDONED)  # pylint: disable=protected-access
    time.sleep(0.02)


def out_of_memory(step: int) -> None:
  """Raises XLA's RESOURCE_EXHAUSTED at `step` if DS2F_FAULT_OOM names it; otherwise nothing."""
  if os.environ.get(OOM_ENV, '').strip() != str(int(step)):
    return
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  print(f'fault point: out of memory at step {int(step)} (pid {os.getpid()})', file=sys.stderr,
        flush=True)
  jax.block_until_ready(jax.jit(lambda: jnp.ones((_OOM_BYTES,), jnp.uint8))())
