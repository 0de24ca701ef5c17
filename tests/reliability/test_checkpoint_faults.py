"""Corrupt or truncated checkpoints, a full disk, an unwritable workdir, a held lock."""

import errno
import glob
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from ds2f_jax import checkpointing, errors, sharding, train, workdir_lock
from tests import scenario as rel
from tests.reliability import trainer_harness as th


def _copy(reference_run, tmp_path):
  w = str(tmp_path / 'w')
  shutil.copytree(reference_run, w)
  return w


def _truncate_largest_file(step_dir):
  files = [f for f in glob.glob(os.path.join(step_dir, '**'), recursive=True) if os.path.isfile(f)]
  biggest = max(files, key=os.path.getsize)
  os.truncate(biggest, os.path.getsize(biggest) // 3)


def _wipe(step_dir):
  shutil.rmtree(step_dir)
  os.mkdir(step_dir)


def _drop_metadata(step_dir):
  os.remove(os.path.join(step_dir, 'state', '_METADATA'))


def _garble_manifest(step_dir):
  with open(os.path.join(step_dir, 'state', 'manifest.ocdbt'), 'wb') as f:
    f.write(b'not a manifest')


def _template(config):
  """A TrainState of the scenario's structure to restore into."""
  with rel.programs_reused():
    mesh = sharding.create_mesh()
    state = train.init_state(config, train.create_model(config), train.create_optimizer(config),
                             mesh)
  return state, sharding.replicated(mesh)


def _flat(state):
  flat = jax.tree_util.tree_flatten_with_path(state)[0]
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in flat}


def test_truncated_newest_checkpoint_is_skipped_and_its_steps_redone(
    synthetic_data_dir, reference_run, tmp_path, caplog):
  w = _copy(reference_run, tmp_path)
  step6 = os.path.join(w, 'checkpoints', '6')
  _truncate_largest_file(step6)
  with caplog.at_level(logging.WARNING):
    rel.run_in_process(rel.scenario_config(synthetic_data_dir), w)
  assert f'Checkpoint {step6} cannot be restored' in caplog.text
  assert (f'Skipped corrupt checkpoint {step6} (moved to {step6}{checkpointing.CORRUPT_SUFFIX});'
          ' resuming from step 4.') in caplog.text
  assert rel.checkpoint_entries(w) == ['2', '4', '6', '6.corrupt']
  # Steps 5 and 6 were trained again, to the same bits.
  rel.assert_same_state(rel.load_checkpoint(reference_run, 6), rel.load_checkpoint(w, 6))


@pytest.mark.parametrize('damage', [_wipe, _drop_metadata, _garble_manifest],
                         ids=['emptied', 'no_metadata', 'garbled_manifest'])
def test_unreadable_newest_checkpoint_falls_back_to_the_previous(
    damage, synthetic_data_dir, reference_run, tmp_path, caplog):
  w = _copy(reference_run, tmp_path)
  step6 = os.path.join(w, 'checkpoints', '6')
  damage(step6)
  target, placement = _template(rel.scenario_config(synthetic_data_dir))
  mngr = checkpointing.create_manager(w, 3)
  try:
    with caplog.at_level(logging.WARNING):
      step, state = checkpointing.restore_latest(mngr, target, placement)
  finally:
    mngr.close()
  assert step == 4
  assert f'Skipped corrupt checkpoint {step6}' in caplog.text
  assert rel.checkpoint_entries(w) == ['2', '4', '6.corrupt']
  ref = checkpointing.create_manager(reference_run, 3, read_only=True)
  expected = checkpointing.restore(ref, 4, target, placement)
  ref.close()
  rel.assert_same_state(_flat(expected), _flat(state))


def test_checkpoints_of_another_config_are_refused_and_left_alone(
    synthetic_data_dir, reference_run, tmp_path):
  w = _copy(reference_run, tmp_path)
  target, placement = _template(rel.scenario_config(synthetic_data_dir))
  # As if model.width had changed: one kernel of another shape.
  other = target.replace(params=jax.tree_util.tree_map(lambda x: x, target.params))
  other.params['encoder']['down1']['ConvBNAct_0']['Conv_0']['kernel'] = np.zeros((3, 3, 3, 8))
  mngr = checkpointing.create_manager(w, 3)
  try:
    with pytest.raises(ValueError, match=(
        rf'^checkpoint {w}/checkpoints/6 was saved with another config \(params/encoder/down1/'
        r'ConvBNAct_0/Conv_0/kernel: \(3, 3, 3, 4\) in the checkpoint, \(3, 3, 3, 8\) in this '
        r'config\); train into a new --workdir, or go back to the config it was trained with$')):
      checkpointing.restore_latest(mngr, other, placement)
  finally:
    mngr.close()
  assert rel.checkpoint_entries(w) == ['2', '4', '6']


def test_when_every_checkpoint_is_corrupt_nothing_is_moved(
    synthetic_data_dir, reference_run, tmp_path):
  w = _copy(reference_run, tmp_path)
  for step in (2, 4, 6):
    _drop_metadata(os.path.join(w, 'checkpoints', str(step)))
  target, placement = _template(rel.scenario_config(synthetic_data_dir))
  mngr = checkpointing.create_manager(w, 3)
  try:
    with pytest.raises(ValueError, match=(
        rf'^no checkpoint in {w}/checkpoints can be restored \(step 6: Metadata file .*; step 4: '
        r'.*; step 2: .*\); move the checkpoints directory aside to start over$')):
      checkpointing.restore_latest(mngr, target, placement)
  finally:
    mngr.close()
  assert rel.checkpoint_entries(w) == ['2', '4', '6']


_DISK_FULL_SCRIPT = textwrap.dedent('''
    import json, os, resource, signal, sys
    import jax.numpy as jnp
    from ds2f_jax import checkpointing, errors
    workdir = sys.argv[1]
    state = {'w': jnp.arange(200_000, dtype=jnp.float32), 'b': jnp.ones((3,))}
    mngr = checkpointing.create_manager(workdir, 3)
    checkpointing.save(mngr, 1, state)
    checkpointing.finish(mngr)
    # From here on no file may grow past 64 KiB: the filesystem is "full".
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, resource.RLIM_INFINITY))
    mngr = checkpointing.create_manager(workdir, 3)
    out = {}
    try:
      checkpointing.save(mngr, 2, state)
      checkpointing.finish(mngr)
    except errors.CheckpointSaveError as e:
      out['error'] = str(e)
    out['steps'] = list(mngr.all_steps())
    print('RESULT', json.dumps(out))
''')


def test_disk_full_during_an_async_save_leaves_no_partial_checkpoint(tmp_path):
  w = str(tmp_path / 'w')
  proc = subprocess.run([sys.executable, '-c', _DISK_FULL_SCRIPT, w], capture_output=True,
                        text=True, timeout=300, cwd=th.ROOT, env=th.main_env())
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.split('RESULT', 1)[1])
  ckpts = os.path.join(w, 'checkpoints')
  assert out['error'] == (
      f'checkpoint step 2 could not be written to {ckpts}: [Errno {errno.EFBIG}] '
      f'{os.strerror(errno.EFBIG)}; its partial files were removed (newest complete checkpoint: '
      'step 1). Fix the cause (free space?), then rerun to resume.')
  assert out['steps'] == [1]
  assert rel.checkpoint_entries(w) == ['1']  # No '2', no '2.orbax-checkpoint-tmp'.


def test_too_little_free_space_stops_training_before_writing(
    synthetic_data_dir, tmp_path, monkeypatch):
  real = shutil.disk_usage

  def nearly_full(path):
    return real(path)._replace(free=100_000)  # Less than the ~2 MiB state.

  monkeypatch.setattr(checkpointing.shutil, 'disk_usage', nearly_full)
  w = str(tmp_path / 'w')
  with pytest.raises(errors.CheckpointSaveError, match=(
      r'^not enough free space for checkpoint step 2 in \S+/checkpoints: it needs about '
      r'[\d.]+ MiB, 0\.1 MiB are free; nothing was written\. Free some space, then rerun to '
      r'resume\.$')):
    rel.run_in_process(rel.scenario_config(synthetic_data_dir), w)
  assert rel.checkpoint_entries(w) == []
  assert not os.path.exists(os.path.join(w, workdir_lock.LOCK_NAME))


def test_unwritable_workdir_is_named(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('x')
  with pytest.raises(PermissionError, match=f'^workdir {blocker}/w is not writable: '):
    train._prepare_workdir(str(blocker / 'w'))  # pylint: disable=protected-access


def test_lock_held_by_this_process_is_refused(tmp_path):
  with workdir_lock.hold(str(tmp_path)):
    with pytest.raises(errors.WorkdirLocked, match=(
        rf'^workdir {tmp_path} is in use by another trainer \(pid={os.getpid()} host=\S+ '
        rf'started=\S+\); wait for it to finish or stop it \(lock file: {tmp_path}/train.lock\)$')):
      workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  assert not os.path.exists(tmp_path / 'train.lock')


def test_without_flock_a_dead_owner_is_taken_over_and_a_live_one_refused(
    tmp_path, monkeypatch, caplog):
  import fcntl  # pylint: disable=g-import-not-at-top

  def no_flock(fd, op):
    raise OSError(errno.ENOLCK, 'No locks available')

  monkeypatch.setattr(fcntl, 'flock', no_flock)
  import socket  # pylint: disable=g-import-not-at-top
  host = socket.gethostname()
  lock_file = tmp_path / 'train.lock'
  lock_file.write_text(f'pid={os.getpid()} host={host} started=x\n')
  with pytest.raises(errors.WorkdirLocked, match=f'pid={os.getpid()} host='):
    workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  gone = subprocess.Popen(['true'])
  gone.wait()
  lock_file.write_text(f'pid={gone.pid} host={host} started=x\n')
  with caplog.at_level(logging.WARNING), workdir_lock.hold(str(tmp_path)):
    assert lock_file.read_text().startswith(f'pid={os.getpid()} ')
  assert f'left by a trainer that is gone (pid={gone.pid} ' in caplog.text
