"""Orbax checkpoints under WORKDIR/checkpoints: the newest N plus the best by val Dice.

What a crash can leave behind, and what happens next (docs/reliability.md):
- orbax writes a step into `<step>.orbax-checkpoint-tmp` and renames it to `<step>`
  once every file is written, so a killed run leaves at most a temporary
  directory; it is never listed as a step, and the next trainer's manager
  deletes it (trainers hold the workdir lock, so it cannot be another's).
- `restore_latest` skips newer steps whose files are truncated or corrupt,
  with a warning naming each, and moves them aside as `<step>.corrupt`.
- `save` refuses when the filesystem has less room than the state needs, and a
  save that fails later (disk full, quota) raises `errors.CheckpointSaveError`
  after deleting its partial files.
"""

import contextlib
import os
import re
import shutil
import time
import weakref

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from ds2f_jax import errors, fault_points

BEST_METRIC = 'val/dice'
CORRUPT_SUFFIX = '.corrupt'  # No '_': orbax reads a trailing '_<digits>' as a step.
_COMMIT_FILE = 'commit_success.txt'

# Manager -> {'step': the step of the newest save call}, to name a failed async save.
_saving = weakref.WeakKeyDictionary()


def _best_metric(metrics) -> float:
  return float(metrics.get(BEST_METRIC, float('-inf')))


def create_manager(workdir: str, keep: int, read_only: bool = False) -> ocp.CheckpointManager:
  """A writable manager deletes leftover temporaries at creation, so only the holder
  of the workdir lock (the trainer) may create one; readers pass read_only=True."""
  policies = ocp.checkpoint_managers
  saving = {'step': None}
  extra = {}
  if fault_points.enabled():  # Tests only: a pause inside the save, before its commit.
    extra['async_options'] = ocp.AsyncOptions(
        post_finalization_callback=lambda: fault_points.reached('save', saving['step']))
  options = ocp.CheckpointManagerOptions(
      preservation_policy=policies.AnyPreservationPolicy([
          policies.LatestN(n=max(int(keep), 1)),
          policies.BestN(get_metric_fn=_best_metric, n=1,
                         keep_checkpoints_without_metrics=False),
      ]),
      best_fn=_best_metric,  # Without it orbax does not store a save's metrics at all.
      best_mode='max',
      read_only=read_only,
      save_interval_steps=0 if read_only else 1,  # orbax warns when it has to set it.
      create=not read_only,
      cleanup_tmp_directories=not read_only,
      **extra,
  )
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  if os.path.exists(directory) and not os.path.isdir(directory):
    raise NotADirectoryError(f'{directory} is a file, not the checkpoints folder')
  mngr = ocp.CheckpointManager(directory, options=options)
  _saving[mngr] = saving
  return mngr


def save(mngr: ocp.CheckpointManager, step: int, state, metrics: dict | None = None) -> None:
  """Asynchronous save; `metrics` (e.g. {'val/dice': ...}) rank it for 'best'.

  Raises:
    errors.CheckpointSaveError: too little free space for this step, or the
      previous (asynchronous) save failed; partial files are removed first.
  """
  saving = _saving.setdefault(mngr, {'step': None})
  _wait(mngr)
  _check_space(mngr, step, state)
  saving['step'] = step
  try:
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
              metrics=metrics or None)
  except Exception as e:  # pylint: disable=broad-except
    raise _save_failed(mngr, step, e) from None


def finish(mngr: ocp.CheckpointManager) -> None:
  """Waits for the last save (raising `errors.CheckpointSaveError` if it failed) and closes."""
  try:
    _wait(mngr)
  finally:
    mngr.close()


def _wait(mngr: ocp.CheckpointManager) -> None:
  try:
    mngr.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-except
    raise _save_failed(mngr, _saving.get(mngr, {}).get('step'), e) from None


def _check_space(mngr: ocp.CheckpointManager, step: int, state) -> None:
  need = sum(int(getattr(x, 'nbytes', 0)) for x in jax.tree_util.tree_leaves(state))
  try:
    usage = shutil.disk_usage(mngr.directory)
  except OSError:
    return
  if usage.total and usage.free < need:  # total 0: a filesystem that does not say.
    raise errors.CheckpointSaveError(
        f'not enough free space for checkpoint step {step} in {mngr.directory}: it needs '
        f'about {need / 2**20:.1f} MiB, {usage.free / 2**20:.1f} MiB are free; nothing was '
        'written. Free some space, then rerun to resume.')


def _reason(e: BaseException) -> str:
  """A short cause; tensorstore wraps OS errors as text with an os_error_code."""
  text = str(e)
  m = re.search(r"os_error_code='?(\d+)", text)
  if m:
    code = int(m.group(1))
    return f'[Errno {code}] {os.strerror(code)}'
  if isinstance(e, OSError) and e.strerror:
    return f'[Errno {e.errno}] {e.strerror}'
  lines = text.split(' See full TensorStore details')[0].strip().splitlines()
  return (lines[0][:200] if lines else '') or type(e).__name__


def _remove_partial(directory: str, step: int) -> list[str]:
  """Deletes step's temporary directories and an uncommitted `<step>`."""
  removed = []
  with contextlib.suppress(FileNotFoundError):
    for name in os.listdir(directory):
      path = os.path.join(directory, name)
      tmp = re.fullmatch(rf'{step}\.orbax-checkpoint-tmp.*', name)
      uncommitted = name == str(step) and not os.path.exists(os.path.join(path, _COMMIT_FILE))
      if tmp or uncommitted:
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
  return removed


def _save_failed(mngr, step, e: Exception) -> errors.CheckpointSaveError:
  directory = str(mngr.directory)
  if step is not None:
    _remove_partial(directory, step)
  with contextlib.suppress(Exception):
    mngr.reload()
  kept = [s for s in mngr.all_steps() if s != step]
  newest = f'step {max(kept)}' if kept else 'none'
  return errors.CheckpointSaveError(
      f'checkpoint step {step} could not be written to {directory}: {_reason(e)}; its partial '
      f'files were removed (newest complete checkpoint: {newest}). Fix the cause (free '
      'space?), then rerun to resume.')


def best_step(mngr: ocp.CheckpointManager) -> int | None:
  scored = [(s, mngr.metrics(s)) for s in mngr.all_steps()]
  scored = [(_best_metric(m), s) for s, m in scored if m and BEST_METRIC in m]
  return max(scored)[1] if scored else None


def resolve_step(mngr: ocp.CheckpointManager, which) -> int:
  """'latest' | 'best' | a step number -> an existing step, or a one-line error."""
  steps = mngr.all_steps()
  where = mngr.directory
  if not steps:
    raise FileNotFoundError(f'no checkpoint in {where}: train first (--mode train)')
  which = str(which)
  if which == 'latest':
    return mngr.latest_step()
  if which == 'best':
    step = best_step(mngr)
    if step is None:
      logging.warning('No checkpoint in %s carries %s; using the latest.', where, BEST_METRIC)
      return mngr.latest_step()
    return step
  if not which.isdigit():
    raise ValueError(f'eval.checkpoint={which!r}: use best, latest or a step number')
  if int(which) not in steps:
    raise FileNotFoundError(f'checkpoint step {which} not in {where}; available: {list(steps)}')
  return int(which)


def restore(mngr: ocp.CheckpointManager, step: int, target, sharding, partial: bool = False):
  """Restores `step` into the structure of `target`, placed with `sharding`.

  partial=True reads only the leaves `target` names (orbax partial restore):
  inference reads {'params', 'batch_stats'} of its graph, not the optimiser.
  """
  abstract = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), target)
  if partial:
    args = ocp.args.PyTreeRestore(
        item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
        partial_restore=True)
  else:
    args = ocp.args.StandardRestore(abstract)
  return mngr.restore(step, args=ocp.args.Composite(state=args))['state']


# How often a reader retries when the step it chose disappears under it.
_READ_ATTEMPTS = 20


def read_step(mngr: ocp.CheckpointManager, which, target, sharding):
  """(step, state) of checkpoint `which` (best | latest | a step), only `target`'s leaves.

  A trainer keeping few checkpoints deletes old steps while a reader (eval,
  predict, export) opens one: a step that vanishes mid-read, or fails and is
  gone when the directory is listed again, is retried on what `which` names
  now. A step that fails twice and is still there is corrupt: one-line error.

  Raises:
    ValueError: the checkpoint holds a model of another config (its saved
      shapes, read from metadata before any data), or it cannot be read.
  """
  failed = {}
  for _ in range(_READ_ATTEMPTS):
    mngr.reload()
    try:
      step = resolve_step(mngr, which)
    except FileNotFoundError:
      if not failed:
        raise
      time.sleep(0.2)  # The trainer deleted the old step before the new one was listed.
      continue
    path = os.path.join(str(mngr.directory), str(step))
    try:
      mismatch = _config_mismatch(path, target, subset=True)
      if mismatch is None:
        state = restore(mngr, step, target, sharding, partial=True)
    except Exception as e:  # pylint: disable=broad-except  # Deletion and corruption raise many types.
      time.sleep(0.2)
      mngr.reload()
      if step in mngr.all_steps() and step in failed:
        raise ValueError(f'checkpoint {path} cannot be read: {_reason(e)}') from None
      if step not in mngr.all_steps():
        logging.warning('Checkpoint %s was deleted while it was read (a trainer keeping few '
                        'checkpoints?); reading %s again.', path, which)
      failed[step] = e
      continue
    if mismatch is not None:
      raise ValueError(f'checkpoint {path} does not fit this config ({mismatch}): model.* must '
                       'match the training run')
    return step, state
  raise ValueError(f'checkpoints in {mngr.directory} changed faster than one could be read '
                   f'({_READ_ATTEMPTS} attempts); stop the trainer or choose a kept step')


def _shapes(tree) -> dict:
  """{('params', 'encoder', ...): shape} for a TrainState or orbax's saved-tree metadata."""
  def name(k):
    for attr in ('name', 'key', 'idx'):  # GetAttrKey, DictKey, SequenceKey.
      if hasattr(k, attr):
        return str(getattr(k, attr))
    return str(k)
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {tuple(name(k) for k in path): tuple(leaf.shape) for path, leaf in flat}


def _config_mismatch(path: str, target, subset: bool = False) -> str | None:
  """How the checkpoint's saved shapes differ from `target`'s, or None. Reading only
  its metadata, so a model of another config is told apart from corrupt data (and
  orbax never starts a restore that would fail). subset: `target` names only
  some of the saved leaves (a partial restore)."""
  saved = _shapes(ocp.StandardCheckpointHandler().metadata(epath.Path(path) / 'state').tree)
  wanted = _shapes(target)
  for key in sorted(set(wanted) if subset else set(saved) | set(wanted)):
    if saved.get(key) != wanted.get(key):
      return (f'{"/".join(key)}: {saved.get(key, "absent")} in the checkpoint, '
              f'{wanted.get(key, "absent")} in this config')
  return None


def _quarantine(path: str) -> str:
  dest, n = path + CORRUPT_SUFFIX, 1
  while os.path.exists(dest):
    dest, n = f'{path}{CORRUPT_SUFFIX}-{n}', n + 1
  os.rename(path, dest)
  return dest


def restore_latest(mngr: ocp.CheckpointManager, target, sharding):
  """(step, state) of the newest checkpoint that restores; (None, target) if none exists.

  Newer steps that fail to restore (truncated or corrupt files) are skipped with
  a warning naming them and, once an older step has restored, moved aside as
  `<step>.corrupt` (kept for inspection, never listed as a step again). If no
  step restores, nothing is moved.

  Raises:
    ValueError: a checkpoint holds a model of another config (shapes differ),
      or checkpoints exist but none restores.
  """
  failed = []
  for step in sorted(mngr.all_steps(), reverse=True):
    path = os.path.join(str(mngr.directory), str(step))
    try:
      mismatch = _config_mismatch(path, target)
      if mismatch is None:
        state = restore(mngr, step, target, sharding)
    except Exception as e:  # pylint: disable=broad-except  # Corruption raises many types.
      logging.warning('Checkpoint %s cannot be restored (%s); trying the one before it.', path,
                      _reason(e))
      failed.append((step, path, e))
      continue
    if mismatch is not None:
      raise ValueError(f'checkpoint {path} was saved with another config ({mismatch}); train '
                       'into a new --workdir, or go back to the config it was trained with')
    for _, bad, _ in failed:
      moved = _quarantine(bad) if jax.process_index() == 0 else bad
      logging.warning('Skipped corrupt checkpoint %s (moved to %s); resuming from step %d.',
                      bad, moved, step)
    if failed:
      mngr.reload()
    return step, state
  if failed:
    detail = '; '.join(f'step {s}: {_reason(e)}' for s, _, e in failed)
    raise ValueError(f'no checkpoint in {mngr.directory} can be restored ({detail}); move '
                     'the checkpoints directory aside to start over')
  return None, target
