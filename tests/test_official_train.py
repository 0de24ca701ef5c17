"""benchmarks/official_train.py: schedule, arguments, bad input, and a 3-step torch smoke run.

The smoke run trains the official DS2F-UNet (width 4, LR 32x32 -> HR 64x64,
batch 2) on the synthetic dataset; it skips when torch, pytorch-msssim or the
official checkout (<repo>/../shared/reference/imed_vision) is absent. The
import into our format and our eval (`main.py --mode import`) are tested in
tests/test_import_official.py.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))

import official_train  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import chase_db1  # pylint: disable=g-import-not-at-top,wrong-import-position
from ds2f_jax import input_pipeline, train  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.mark.parametrize('warmup', [0, 30])
def test_lr_factors_are_our_schedule(warmup):
  config = chase_db1.get_config('cpu')
  config.optim.warmup_steps = warmup
  steps = config.num_train_steps
  ours = np.array([float(train.lr_schedule(config)(k)) for k in range(steps)])
  theirs = official_train.lr_factors(config, steps) * config.optim.learning_rate
  np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-8)
  assert theirs[-1] > 0 and official_train.lr_factors(config, steps + 1)[-1] == 0


def test_config_args_keep_only_config_flags():
  argv = ['--config', 'configs/drive.py:cpu', '--workdir', 'W', '--config.seed=1',
          '--config.data.manual_dir', 'D', '--reference=R', '--no_eval']
  assert official_train.config_args(argv) == [
      '--config', 'configs/drive.py:cpu', '--config.seed=1', '--config.data.manual_dir', 'D']


def test_refuses_what_it_cannot_mirror():
  config = chase_db1.get_config('cpu')
  config.model.variant = 'seg_only'
  with pytest.raises(official_train.HarnessError, match=r"model.variant='seg_only'"):
    official_train.check_config(config)


def test_missing_reference_is_one_error_line(tmp_path):
  done = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'benchmarks', 'official_train.py'),
       '--config', os.path.join(ROOT, 'configs', 'chase_db1.py') + ':cpu',
       '--workdir', str(tmp_path / 'w'), '--reference', str(tmp_path / 'nowhere')],
      capture_output=True, text=True, check=False, cwd=ROOT)
  assert done.returncode == 2
  assert done.stderr.strip().splitlines()[-1] == (
      f'error: --reference={tmp_path / "nowhere"}: no official imed_vision checkout there '
      '(expected the folder that holds imed_vision/)')
  assert not (tmp_path / 'w').exists()


def test_trains_official_model_on_our_batches(tiny_config, tmp_path, monkeypatch):
  pytest.importorskip('torch')
  pytest.importorskip('pytorch_msssim')
  if not os.path.isdir(os.path.join(official_train.DEFAULT_REFERENCE, 'imed_vision')):
    pytest.skip('the official checkout is absent')
  config = tiny_config
  config.num_train_steps = 3
  config.log_every_steps = 1
  config.eval_every_steps = 3
  seen = []
  build = official_train.build

  def recording_build(cfg, torch):
    model, losses, optimizer = build(cfg, torch)
    model.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].numpy().copy()) if m.training else None)
    return model, losses, optimizer

  monkeypatch.setattr(official_train, 'build', recording_build)
  workdir = str(tmp_path / 'run')
  record = official_train.run(config, workdir, official_train.DEFAULT_REFERENCE, False, [])

  ours = input_pipeline.train_iterator(config, 0)
  assert len(seen) == 3
  for got in seen:  # NCHW of exactly the batches `main.py` would train on, in order.
    np.testing.assert_array_equal(got, np.transpose(next(ours)['lr'], (0, 3, 1, 2)))
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    rows = [json.loads(line) for line in f]
  train_rows = [r for r in rows if 'loss' in r]
  val_rows = [r for r in rows if 'val/dice' in r]
  assert [r['step'] for r in train_rows] == [1, 2, 3] and [r['step'] for r in val_rows] == [3]
  for r in train_rows:
    assert set(r) >= {'step', 'loss', 'ce', 'mse', 'ssim', 'rmi', 'lr', 'grad_norm'}
    assert r['loss'] == pytest.approx(r['ce'] + r['mse'] + r['ssim'] + r['rmi'], rel=1e-5)
  np.testing.assert_allclose([r['lr'] for r in train_rows],
                             [float(train.lr_schedule(config)(k)) for k in range(3)], rtol=1e-6)
  assert 0.0 <= val_rows[0]['val/dice'] <= 1.0
  import torch  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  for name in ('official_best.pth', 'official_last.pth'):
    state = torch.load(os.path.join(workdir, name), weights_only=False)
    assert state['step'] == 3 and 'down1.conv.conv1.conv.weight' in state['model']
  assert record['steps'] == 3 and record['wall_s'] > 0
  assert json.load(open(os.path.join(workdir, 'config.json')))['model']['width'] == 4
