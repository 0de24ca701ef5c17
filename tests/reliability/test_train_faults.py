"""Training faults of Reliability II: a NaN update, invalid optimiser numbers, a refused run's
config.json, Ctrl-C, a torn metrics.jsonl (docs/reliability.md, "Reliability II")."""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import time

import jax.numpy as jnp
import numpy as np
import pytest

from ds2f_jax import errors, fault_points, nonfinite, reporting, train, workdir_lock
from tests import scenario as rel
from tests.reliability import trainer_harness as th

# ---------------------------------------------------------------------------
# A NaN model is never kept as good.


@pytest.mark.parametrize('key, value, message', [
    ('optim.learning_rate', float('nan'), r'optim\.learning_rate=nan must be a finite number'),
    ('optim.learning_rate', float('inf'), r'optim\.learning_rate=inf must be a finite number'),
    ('optim.learning_rate', 0.0, r'optim\.learning_rate=0\.0 must be > 0'),
    ('optim.learning_rate', -0.01, r'optim\.learning_rate=-0\.01 must be > 0'),
    ('optim.weight_decay', -1e-4, r'optim\.weight_decay=-0\.0001 must be >= 0'),
    ('optim.momentum', 1.0, r'optim\.momentum=1\.0 must be in \[0, 1\)'),
    ('optim.momentum', -0.5, r'optim\.momentum=-0\.5 must be in \[0, 1\)'),
    ('optim.poly_power', 0.0, r'optim\.poly_power=0\.0 must be > 0'),
    ('optim.warmup_steps', -3, r'optim\.warmup_steps=-3 must be >= 0'),
    ('loss.mse_weight', -1.0, r'loss\.mse_weight=-1\.0 must be >= 0'),
    ('loss.ssim_data_range', 0.0, r'loss\.ssim_data_range=0\.0 must be > 0'),
    ('keep_checkpoints', 0, r'keep_checkpoints=0 must be >= 1'),
    ('data.num_workers', -1, r'data\.num_workers=-1 must be >= 0'),
    ('data.cache_mb', -1, r'data\.cache_mb=-1 must be >= 0'),
    ('eval.batch_size', -2, r'eval\.batch_size=-2 must be >= 0 \(0: batch_size\)'),
], ids=['lr_nan', 'lr_inf', 'lr_zero', 'lr_negative', 'weight_decay_negative', 'momentum_one',
        'momentum_negative', 'poly_power_zero', 'warmup_negative', 'loss_weight_negative',
        'ssim_range_zero', 'keep_zero', 'workers_negative', 'cache_negative',
        'eval_batch_negative'])
def test_invalid_optimiser_numbers_are_refused_before_the_workdir(tiny_config, tmp_path, key,
                                                                  value, message):
  node = tiny_config
  *parents, leaf = key.split('.')
  for p in parents:
    node = node[p]
  node[leaf] = value
  w = tmp_path / 'w'
  with pytest.raises(ValueError, match=f'^{message}$'):
    train.train_and_evaluate(tiny_config, str(w))
  assert not w.exists()


def test_nan_learning_rate_on_the_command_line_is_one_line(tmp_path):
  w = tmp_path / 'w'
  rc, stderr = th.run_main(w, ['--config.optim.learning_rate=nan', '--config.model.width=4',
                               '--config.batch_size=2', '--config.num_train_steps=2',
                               '--config.checkpoint_every_steps=1'])
  assert rc == errors.EXIT_BAD_INPUT, stderr[-2000:]
  assert 'Traceback' not in stderr
  assert [l for l in stderr.splitlines() if l.startswith('error:')] == [
      'error: optim.learning_rate=nan must be a finite number']
  assert not w.exists()


@pytest.mark.slow
def test_a_step_whose_update_goes_nan_is_not_applied_or_saved(synthetic_data_dir, tmp_path,
                                                              monkeypatch):
  """Loss and gradients stay finite under a NaN learning rate; the parameters do not.
  Validation would refuse the rate, so it is switched off to reach the in-step guard."""
  monkeypatch.setattr(train, '_validate_numbers', lambda config: None)
  cfg = rel.scenario_config(synthetic_data_dir)
  cfg.optim.learning_rate = float('nan')
  cfg.checkpoint_every_steps = 1
  w = str(tmp_path / 'w')
  with pytest.raises(errors.NonFiniteError) as e:
    rel.run_in_process(cfg, w)
  msg = str(e.value)
  assert msg.startswith('training step 1 went non-finite in updated parameters / optimiser state '
                        '(loss='), msg
  assert 'lr=nan' in msg and f'No checkpoint was saved in {w}/checkpoints.' in msg, msg
  assert rel.checkpoint_entries(w) == []
  assert not os.path.exists(os.path.join(w, workdir_lock.LOCK_NAME))


def test_tree_is_finite_checks_float_leaves_only():
  good = {'w': jnp.ones((3, 2)), 'count': jnp.array(7, jnp.int32), 'b': np.zeros(4, np.float32)}
  assert bool(nonfinite.tree_is_finite(good))
  assert nonfinite.nonfinite_leaves(good) == []
  for bad_value in (np.nan, np.inf, -np.inf):
    bad = dict(good, b=np.array([0.0, bad_value, 0.0, 0.0], np.float32))
    assert not bool(nonfinite.tree_is_finite(bad))
    assert nonfinite.nonfinite_leaves({'params': bad}) == ['params/b']
  assert bool(nonfinite.tree_is_finite({}))


# ---------------------------------------------------------------------------
# A refused run leaves W/config.json as it was.


def test_refused_fresh_run_writes_no_config_json(tiny_config, tmp_path):
  tiny_config.model.num_classes = 3  # Refused once the dataset is opened.
  w = tmp_path / 'w'
  with pytest.raises(ValueError, match='model.num_classes=3 but dataset'):
    train.train_and_evaluate(tiny_config, str(w))
  assert not (w / 'config.json').exists()


def test_resume_refused_for_another_width_keeps_config_json(synthetic_data_dir, reference_run,
                                                            tmp_path):
  w = tmp_path / 'w'
  shutil.copytree(reference_run, w)
  before = (w / 'config.json').read_bytes()
  cfg = rel.scenario_config(synthetic_data_dir)
  cfg.num_train_steps = rel.STEPS + 2
  cfg.model.width = 2 * cfg.model.width
  with pytest.raises(ValueError, match='was saved with another config'):
    rel.run_in_process(cfg, str(w))
  assert (w / 'config.json').read_bytes() == before
  assert json.loads(before)['model']['width'] == cfg.model.width // 2


# ---------------------------------------------------------------------------
# Ctrl-C: a checkpoint at the current step, one line, 130; twice: at once.


@pytest.fixture
def trainer_cleanup():
  yield
  th.Trainer.kill_all()


@pytest.mark.slow
def test_ctrl_c_saves_the_current_step_and_exits_130(tmp_path, synthetic_data_dir, reference_run,
                                                      trainer_cleanup):
  w = tmp_path / 'w'
  args = [*rel.CLI_OVERRIDES, f'--config.data.data_dir={synthetic_data_dir}']
  t = th.Trainer(w, args, tmp_path / 'faults', pause=['step:3'])
  t.wait_paused('step', 3)
  t.signal(signal.SIGINT)
  time.sleep(0.5)
  t.resume('step', 3)
  rc = t.wait()
  log = t.log()
  assert rc == errors.EXIT_INTERRUPTED == 130, log[-3000:]
  assert 'Traceback' not in log and 'KeyboardInterrupt' not in log, log[-3000:]
  assert log.strip().splitlines()[-1] == (
      f'interrupted (SIGINT) at step 3: checkpoint saved in {w}/checkpoints; run the same '
      'command to resume')
  assert rel.checkpoint_entries(str(w)) == ['2', '3']
  assert rel.load_checkpoint(str(w), 3)["['step']"] == 3
  assert not (w / workdir_lock.LOCK_NAME).exists()


@pytest.mark.slow
def test_second_ctrl_c_exits_at_once(tmp_path, synthetic_data_dir, reference_run,
                                     trainer_cleanup):
  w = tmp_path / 'w'
  args = [*rel.CLI_OVERRIDES, f'--config.data.data_dir={synthetic_data_dir}']
  t = th.Trainer(w, args, tmp_path / 'faults', pause=['step:3'])
  t.wait_paused('step', 3)  # Never resumed: only the second Ctrl-C can end it.
  t.signal(signal.SIGINT)
  time.sleep(0.5)
  t.signal(signal.SIGINT)
  start = time.monotonic()
  rc = t.wait(timeout=30)
  assert time.monotonic() - start < 10
  assert rc == -signal.SIGINT  # A shell shows 128 + 2 = 130.
  assert 'Ctrl-C again to exit at once' in t.log()


# ---------------------------------------------------------------------------
# metrics.jsonl: a torn last line stays apart; NaN is written as null.


def test_append_after_a_torn_line_starts_a_new_line(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "lo')  # Killed mid-write.
  writer = reporting.MetricWriter(str(tmp_path))
  writer.write_scalars(2, {'loss': 0.25})
  writer.close()
  lines = path.read_text().splitlines()
  assert lines == ['{"step": 1, "loss": 0.5}', '{"step": 2, "lo', '{"step": 2, "loss": 0.25}']


def test_non_finite_metrics_are_written_as_null(tmp_path):
  writer = reporting.MetricWriter(str(tmp_path))
  writer.write_scalars(4, {'val/auc_roc': np.float32(np.nan), 'loss': float('inf'),
                           'val/dice': np.float32(0.5), 'per_class': np.array([np.nan, 1.0])})
  writer.close()
  text = (tmp_path / 'metrics.jsonl').read_text()
  row = json.loads(text, parse_constant=lambda c: pytest.fail(f'non-JSON token {c}'))
  assert row == {'step': 4, 'val/auc_roc': None, 'loss': None, 'val/dice': 0.5,
                 'per_class': [None, 1.0]}
  assert reporting.json_safe({'a': [math.nan, {'b': -math.inf}], 'c': 1}) == {
      'a': [None, {'b': None}], 'c': 1}


# ---------------------------------------------------------------------------
# Out of memory: one line, exit 2, within seconds, even with reader threads busy.

OOM_BATCH = 2048  # One batch of the tiny config takes ~20 s to build on CPU.
OOM_EXIT_S = 8.0  # Before the fix: the rest of the batch in flight (~20 s), or more.

OOM_LINE = (r'error: out of memory: 4096\.0 GiB of device memory could not be allocated for '
            r'batch_size=(\d+) \(LR 32x32 -> HR 64x64, model\.name=\S+, model\.width=4, '
            r'dtype=float32\); lower --config\.batch_size \(--config\.grad_accum_steps keeps the '
            r'effective batch\), or data\.crop_size, or set --config\.remat=True')


@pytest.mark.slow
def test_out_of_memory_exits_2_at_once_with_one_line(tmp_path, synthetic_data_dir,
                                                     reference_run):
  """XLA's own RESOURCE_EXHAUSTED (a 4 TiB allocation) at step 1, while the reader
  threads are still building the next large batches (each takes seconds): the
  run must not wait for them, as it did when it hung at interpreter exit."""
  del reference_run  # Warms the compile cache (the init program is the scenario's).
  w = tmp_path / 'w'
  args = th.main_args(w, [*rel.CLI_OVERRIDES, f'--config.data.data_dir={synthetic_data_dir}',
                          f'--config.batch_size={OOM_BATCH}', '--config.data.prefetch=4'])
  env = th.main_env(**{fault_points.OOM_ENV: '1'})
  proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, cwd=th.ROOT, env=env)
  try:
    lines, fired = [], None
    for line in proc.stderr:
      lines.append(line.rstrip('\n'))
      if fired is None and line.startswith('fault point: out of memory at step 1'):
        fired = time.monotonic()
    rc = proc.wait(timeout=120)
    ended = time.monotonic()
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  text = '\n'.join(lines)
  assert fired is not None, text[-3000:]
  assert rc == errors.EXIT_BAD_INPUT, text[-3000:]
  assert 'Traceback' not in text, text[-3000:]
  errors_ = [l for l in lines if l.startswith('error:')]
  assert len(errors_) == 1 and re.fullmatch(OOM_LINE, errors_[0]), errors_
  assert int(re.fullmatch(OOM_LINE, errors_[0]).group(1)) == OOM_BATCH
  print(f'exited {ended - fired:.1f} s after the failure')
  assert ended - fired < OOM_EXIT_S, f'exited {ended - fired:.1f} s after the failure'
  assert not (w / workdir_lock.LOCK_NAME).exists()


def test_docs_state_the_new_cases_and_their_messages():
  with open(os.path.join(th.ROOT, 'docs', 'reliability.md'), encoding='utf-8') as f:
    doc = f.read()
  for phrase in ('optim.learning_rate=nan must be a finite number',
                 'optim.momentum=1.0 must be in [0, 1)',
                 'went non-finite in updated parameters / optimiser state',
                 '| 130 | interrupted: Ctrl-C (SIGINT)',
                 'interrupted (SIGINT) at step N',
                 'out of memory: 4096.0 GiB of device memory could not be allocated for '
                 'batch_size=20000',
                 'refused unread, it would inflate to',
                 'two files in the manual dir could be',
                 'Non-finite metric values are written as `null`',
                 'incomplete.XXXXXX_<version>'):
    assert phrase in doc, phrase


@pytest.mark.parametrize('error, what', [
    (RuntimeError('RESOURCE_EXHAUSTED: Out of memory while trying to allocate 25769803776 '
                  'bytes.'), '24.0 GiB of device memory'),
    (RuntimeError('RESOURCE_EXHAUSTED: Out of memory while trying to allocate 12.34GiB.'),
     '12.34GiB of device memory'),
    (MemoryError(), 'host memory'),
], ids=['gpu_bytes', 'gpu_gib', 'host'])
def test_out_of_memory_messages_name_the_size(tiny_config, error, what):
  msg = str(train.out_of_memory_error(tiny_config, error))
  assert msg.startswith(f'out of memory: {what} could not be allocated for batch_size='), msg
  assert train.out_of_memory_error(tiny_config, RuntimeError('INTERNAL: other')) is None
