"""kill -9 at three points, SIGTERM, a second trainer: resume is exact, bit for bit.

One workdir goes through four trainer subprocesses and a final in-process
resume (the `chain` fixture records what each stage left; the tests below
judge it):

  P1  pauses after step 3 (checkpoint 2 committed)   -> a second trainer is
      started on the workdir and must refuse        -> kill -9
  P2  resumes from 2; pauses inside the asynchronous save of step 4, after
      its files are written and before the commit   -> kill -9
  P3  must resume from 2 (4 never committed); pauses after step 5
      (checkpoint 4 committed)                      -> SIGTERM: saves 5, exit 143
  P4  resumes from 5; pauses at the evaluation of step 6 -> kill -9
  P5  (in process) resumes from 5 and finishes.

Every checkpoint and metrics row must equal the uninterrupted reference run's.
"""

import os
import re
import signal

import pytest

from ds2f_jax import errors, workdir_lock
from tests import scenario as rel
from tests.reliability import trainer_harness as th

pytestmark = pytest.mark.slow  # Trains or compiles many programs: the full suite only.


def _tmp_entries(workdir):
  return [n for n in rel.checkpoint_entries(workdir) if 'tmp' in n]


def _files(workdir):
  """Every file with its size and mtime: what 'undisturbed' compares. (TensorBoard
  files are left out: their writer thread flushes on a timer, paused trainer or not.)"""
  out = {}
  for dirpath, dirs, names in os.walk(workdir):
    dirs[:] = [d for d in dirs if d != 'tensorboard']
    for n in names:
      p = os.path.join(dirpath, n)
      st = os.stat(p)
      out[os.path.relpath(p, workdir)] = (st.st_size, st.st_mtime_ns)
  return out


@pytest.fixture(scope='module')
def chain(tmp_path_factory, synthetic_data_dir, reference_run):
  del reference_run  # Built first: it warms the compile cache the subprocesses read.
  root = tmp_path_factory.mktemp('chain')
  w = str(root / 'w')
  args = [*rel.CLI_OVERRIDES, f'--config.data.data_dir={synthetic_data_dir}']
  obs = {'workdir': w}
  try:
    # P1: kill -9 between checkpoints, with a second trainer refused meanwhile.
    p1 = th.Trainer(w, args, root / 'f1', pause=['step:3'])
    p1.wait_paused('step', 3)
    th.wait_for(lambda: rel.committed_steps(w) == [2], what='checkpoint 2')
    obs['p1_pid'] = p1.pid
    before = _files(w)
    obs['second'] = th.run_main(w, args)
    obs['p1_alive_after_second'] = p1.proc.poll() is None
    obs['p1_files_unchanged'] = _files(w) == before
    obs['p1_rc'] = p1.kill9()
    obs['p1_entries'] = rel.checkpoint_entries(w)
    with open(os.path.join(w, workdir_lock.LOCK_NAME)) as f:
      obs['stale_lock'] = f.read()

    # P2: kill -9 inside the save of step 4.
    p2 = th.Trainer(w, args, root / 'f2', pause=['save:4'])
    p2.wait_paused('save', 4)
    obs['p2_entries'] = rel.checkpoint_entries(w)
    obs['p2_rc'] = p2.kill9()
    obs['p2_log'] = p2.log()
    obs['p2_entries_after_kill'] = rel.checkpoint_entries(w)

    # P3: SIGTERM after step 5.
    p3 = th.Trainer(w, args, root / 'f3', pause=['step:5'])
    p3.wait_paused('step', 5)
    th.wait_for(lambda: rel.committed_steps(w) == [2, 4], what='checkpoint 4')
    obs['p3_entries_paused'] = rel.checkpoint_entries(w)
    p3.signal(signal.SIGTERM)
    p3.resume('step', 5)
    obs['p3_rc'] = p3.wait()
    obs['p3_log'] = p3.log()
    obs['p3_entries'] = rel.checkpoint_entries(w)

    # P4: kill -9 during the evaluation of step 6.
    p4 = th.Trainer(w, args, root / 'f4', pause=['eval:6'])
    p4.wait_paused('eval', 6)
    obs['p4_rc'] = p4.kill9()
    obs['p4_log'] = p4.log()
    obs['p4_entries'] = rel.checkpoint_entries(w)
  finally:
    th.Trainer.kill_all()

  # P5: the last resume, in process.
  rel.run_in_process(rel.scenario_config(synthetic_data_dir), w)
  obs['final_entries'] = rel.checkpoint_entries(w)
  return obs


def _resumed_at(log):
  return [int(s) for s in re.findall(r'Resumed from \S+ at step (\d+)\.', log)]


def test_kill9_between_checkpoints_resumes_from_the_newest(chain):
  assert chain['p1_rc'] == -signal.SIGKILL
  assert chain['p1_entries'] == ['2']  # Step 3 was never saved; nothing half-written.
  assert _resumed_at(chain['p2_log']) == [2]


def test_kill9_during_checkpoint_save_leaves_only_a_temporary(chain):
  assert chain['p2_rc'] == -signal.SIGKILL
  # Paused inside the save: step 4 was fully written, but not yet committed.
  assert chain['p2_entries'] == ['2', '4.orbax-checkpoint-tmp']
  assert chain['p2_entries_after_kill'] == ['2', '4.orbax-checkpoint-tmp']
  # The next trainer resumed from 2, not from the uncommitted 4, and cleaned it up.
  assert _resumed_at(chain['p3_log']) == [2]
  assert chain['p3_entries_paused'] == ['2', '4']


def test_sigterm_saves_the_current_step_and_exits_143(chain):
  assert chain['p3_rc'] == errors.EXIT_PREEMPTED == 143
  assert chain['p3_entries'] == ['2', '4', '5']  # 5 is not a checkpoint_every_steps step.
  assert 'preempted (SIGTERM) at step 5: checkpoint saved in' in chain['p3_log']
  assert 'Traceback' not in chain['p3_log']
  assert _resumed_at(chain['p4_log']) == [5]
  assert rel.load_checkpoint(chain['workdir'], 5)["['step']"] == 5


def test_kill9_during_evaluation_redoes_the_step(chain):
  assert chain['p4_rc'] == -signal.SIGKILL
  assert chain['p4_entries'] == ['2', '4', '5']
  # keep_checkpoints=3: saving 6 retired 2.
  assert chain['final_entries'] == ['4', '5', '6']


def test_checkpoints_equal_the_uninterrupted_run_bit_for_bit(chain, reference_run):
  for step in (4, 6):  # Params, BatchNorm statistics, optimiser state and step.
    rel.assert_same_state(rel.load_checkpoint(reference_run, step),
                          rel.load_checkpoint(chain['workdir'], step), f'step {step}')


def test_metrics_equal_the_uninterrupted_run(chain, reference_run):
  ref = rel.last_rows_by_step(reference_run)
  got = rel.last_rows_by_step(chain['workdir'])
  assert sorted(got) == sorted(ref)
  for key in ref:
    assert got[key] == ref[key], key


def test_second_trainer_is_refused_and_the_first_undisturbed(chain):
  rc, stderr = chain['second']
  assert rc == errors.EXIT_BAD_INPUT
  lines = [l for l in stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1, stderr[-2000:]
  assert 'is in use by another trainer' in lines[0]
  assert f'pid={chain["p1_pid"]} ' in lines[0]
  assert workdir_lock.LOCK_NAME in lines[0]
  assert 'Traceback' not in stderr
  assert chain['p1_alive_after_second'] and chain['p1_files_unchanged']


def test_lock_of_a_killed_trainer_is_taken_over(chain):
  assert chain['stale_lock'].startswith(f'pid={chain["p1_pid"]} ')
  assert re.search(rf'Took over \S+train\.lock left by a trainer that is gone '
                   rf'\(pid={chain["p1_pid"]} ', chain['p2_log'])
  assert not os.path.exists(os.path.join(chain['workdir'], workdir_lock.LOCK_NAME))
