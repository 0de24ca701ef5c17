"""`--mode prepare` killed with kill -9: the `incomplete.*` directory TFDS leaves is deleted by
the next prepare, and never while another preparer may still be writing it."""

import fcntl
import os
import signal
import subprocess
import sys
import threading

import pytest

from configs import synthetic
from ds2f_jax import distributed
from tests.reliability import trainer_harness as th

VERSION_PARENT = ('synthetic_fundus', 'default')


def _config(data_dir):
  c = synthetic.get_config('tiny')
  c.data.data_dir = str(data_dir)
  return c


def _incomplete(data_dir):
  parent = os.path.join(data_dir, *VERSION_PARENT)
  return sorted(n for n in os.listdir(parent) if n.startswith('incomplete.')) if os.path.isdir(
      parent) else []


def test_kill9_during_prepare_leaves_a_directory_the_next_prepare_deletes(tmp_path):
  data = tmp_path / 'data'
  args = [sys.executable, os.path.join(th.ROOT, 'main.py'), '--config',
          'configs/synthetic.py:tiny', '--mode', 'prepare', f'--config.data.data_dir={data}']
  proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          cwd=th.ROOT, env=th.main_env())
  try:
    th.wait_for(lambda: _incomplete(data) or proc.poll() is not None, timeout=240,
                what='an incomplete.* directory')
    proc.send_signal(signal.SIGKILL)
  finally:
    proc.kill()
    proc.wait(timeout=60)
  left = _incomplete(data)
  if proc.returncode != -signal.SIGKILL or not left:
    pytest.skip('the build finished before the kill')
  # Another version's leftovers and other names are not ours to delete.
  parent = os.path.join(data, *VERSION_PARENT)
  os.makedirs(os.path.join(parent, 'incomplete.ABC123_9.9.9'))
  builder = distributed.prepare_dataset(_config(data).data)
  assert builder.is_prepared()
  assert _incomplete(data) == ['incomplete.ABC123_9.9.9']


def test_a_live_preparer_holding_the_lock_is_waited_for(tmp_path):
  data = tmp_path / 'data'
  parent = os.path.join(data, *VERSION_PARENT)
  stale = os.path.join(parent, 'incomplete.Q1W2E3_1.0.0')
  os.makedirs(stale)
  lock = os.path.join(parent, distributed.PREPARE_LOCK.format(version='1.0.0'))
  fd = os.open(lock, os.O_RDWR | os.O_CREAT)
  fcntl.flock(fd, fcntl.LOCK_EX)  # "Another process is building."
  result = {}
  worker = threading.Thread(
      target=lambda: result.setdefault('b', distributed.prepare_dataset(_config(data).data)))
  try:
    worker.start()
    worker.join(timeout=2.0)
    assert worker.is_alive() and os.path.isdir(stale)  # Waiting; its directory untouched.
  finally:
    os.close(fd)  # The other preparer is gone.
  worker.join(timeout=240)
  assert not worker.is_alive() and result['b'].is_prepared()
  assert not os.path.exists(stale)
