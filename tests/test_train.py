"""End to end: training runs, writes its workdir, resumes exactly, shards correctly."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ds2f_jax import input_pipeline
from tests import scenario as rel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rows(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


@pytest.mark.slow
def test_run_writes_workdir(reference_run, synthetic_data_dir, tmp_path):
  """What the shared 6-step run (checkpoints every 2 steps, evaluation at 6) leaves."""
  rows = _rows(reference_run)
  train_rows = [r for r in rows if 'loss' in r]
  assert [r['step'] for r in train_rows] == [1, 2, 3, 4, 5, 6]
  for key in ('loss', 'ce', 'mse', 'ssim', 'rmi', 'lr', 'grad_norm'):
    assert all(np.isfinite(r[key]) for r in train_rows), key
  assert train_rows[0]['lr'] == pytest.approx(0.05)  # Poly decay: full lr at step 0 ...
  assert train_rows[1]['lr'] == pytest.approx(0.05 * (1 - 1 / 6)**0.9)  # ... then (1 - t/T)^0.9.
  assert train_rows[5]['lr'] == pytest.approx(0.05 * (1 - 5 / 6)**0.9)
  assert 'images_per_s' in train_rows[1]
  val = [r for r in rows if 'val/dice' in r]
  assert len(val) == 1 and val[0]['step'] == 6
  assert 0.0 <= val[0]['val/dice'] <= 1.0 and 0.0 <= val[0]['val/acc'] <= 1.0
  assert sorted(os.listdir(os.path.join(reference_run, 'checkpoints'))) == ['2', '4', '6']
  with open(os.path.join(reference_run, 'config.json')) as f:
    assert json.load(f)['model']['width'] == 4
  assert os.listdir(os.path.join(reference_run, 'tensorboard'))

  # A finished run says so and changes nothing.
  workdir = str(tmp_path / 'w')
  shutil.copytree(reference_run, workdir)
  assert rel.run_in_process(rel.scenario_config(synthetic_data_dir), workdir) == {}
  assert _rows(workdir) == rows
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2', '4', '6']


@pytest.mark.slow
def test_resume_continues_exactly(reference_run, synthetic_data_dir, tmp_path, monkeypatch):
  cfg = rel.scenario_config(synthetic_data_dir)
  real_iterator = input_pipeline.train_iterator

  def dying_iterator(*args, **kwargs):  # Yields 3 batches, then the process "dies".
    it = real_iterator(*args, **kwargs)
    for _ in range(3):
      yield next(it)
    raise KeyboardInterrupt

  resumed = str(tmp_path / 'resumed')
  monkeypatch.setattr(input_pipeline, 'train_iterator', dying_iterator)
  with pytest.raises(KeyboardInterrupt):
    rel.run_in_process(cfg, resumed)
  monkeypatch.setattr(input_pipeline, 'train_iterator', real_iterator)
  assert sorted(os.listdir(os.path.join(resumed, 'checkpoints'))) == ['2']
  last = rel.run_in_process(cfg, resumed)
  assert np.isfinite(last['loss'])  # A run returns its last scalars.

  def losses(workdir):  # The last record of each step wins (steps after the checkpoint rerun).
    return {r['step']: r for r in _rows(workdir) if 'loss' in r}

  a, b = losses(reference_run), losses(resumed)
  assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
  for step in a:
    for key in ('loss', 'ce', 'mse', 'ssim', 'rmi', 'lr'):
      assert a[step][key] == b[step][key], (step, key)


_DEVICES_SCRIPT = textwrap.dedent('''
    import os, sys, json
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '')
                               + ' --xla_force_host_platform_device_count=8')
    import jax, numpy as np
    sys.path.insert(0, {root!r})
    from configs import synthetic
    from ds2f_jax import input_pipeline, sharding, train
    cfg = synthetic.get_config('tiny')
    cfg.data.data_dir = {data_dir!r}
    cfg.batch_size = 8
    batch = next(input_pipeline.train_iterator(cfg, 0))
    out = {{}}
    for n in (1, 8):
      mesh = sharding.create_mesh(jax.devices()[:n])
      model, tx = train.create_model(cfg), train.create_optimizer(cfg)
      state = train.init_state(cfg, model, tx, mesh)
      step = train.make_train_step(cfg, model, tx, mesh)
      losses = []
      for _ in range(2):
        state, scalars = step(state, sharding.put_batch(batch, mesh))
        losses.append({{k: float(v) for k, v in scalars.items()}})
      out[n] = losses
    print('RESULT', json.dumps(out))
''')


@pytest.mark.slow
def test_same_loss_on_1_and_8_devices(synthetic_data_dir):
  script = _DEVICES_SCRIPT.format(root=ROOT, data_dir=synthetic_data_dir)
  proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                        timeout=600, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.split('RESULT', 1)[1])
  one, eight = result['1'], result['8']
  # Step 1: the same loss terms to float32 rounding (measured <= 8e-8 relative).
  for key in ('loss', 'ce', 'mse', 'ssim', 'rmi'):
    assert eight[0][key] == pytest.approx(one[0][key], rel=2e-5, abs=1e-6), key
  # Gradients sum in another order on 8 devices, and RMI's 9x9 solves (condition ~1e7)
  # amplify that rounding: step 1's gradient norm agrees to 1.3e-4 on this batch (6e-8 on the
  # NumPy-augmented one). Step 2 starts from weights that differ by lr times that, so its
  # loss terms agree to 6e-5 (measured) and its gradient norm to 2e-2.
  assert eight[0]['grad_norm'] == pytest.approx(one[0]['grad_norm'], rel=1e-3)
  for key in ('loss', 'ce', 'mse', 'ssim', 'rmi'):
    assert eight[1][key] == pytest.approx(one[1][key], rel=2e-4, abs=1e-6), key
  assert eight[1]['grad_norm'] == pytest.approx(one[1]['grad_norm'], rel=5e-2)


def _main(*args, timeout=300):
  return subprocess.run([sys.executable, os.path.join(ROOT, 'main.py'), *args],
                        capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize('override, expected', [
    ('--config.model.nam=x', "--config.model.nam ('nam' is not a key"),
    ('--config.model.name=nope', "model.name='nope' is unknown"),
    ('--config.data.name=nope', "data.name 'nope' is not a dataset"),
    ('--config.model.num_classes=1', 'model.num_classes=1'),
    ('--config.data.hr_size=(65,64)', 'data.hr_size=(65, 64) is not divisible by model.upscale=2'),
    ('--config.data.hr_size=(16,16)', 'too small'),
    ('--config.model.width=abc', '--config.model.width=abc'),
])
def test_bad_input_is_one_line_naming_the_value(override, expected, tmp_path):
  proc = _main('--config', 'configs/synthetic.py:tiny', '--workdir', str(tmp_path / 'w'),
               '--config.data.data_dir', str(tmp_path / 'd'), override)
  assert proc.returncode != 0
  lines = [l for l in proc.stderr.strip().splitlines() if l.startswith('error:')]
  assert len(lines) == 1 and expected in lines[0], proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr


def test_unwritable_workdir_is_named(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('x')
  proc = _main('--config', 'configs/synthetic.py:tiny', '--workdir', str(blocker / 'w'),
               '--config.data.data_dir', str(tmp_path / 'd'))
  assert proc.returncode == 2
  assert f'workdir {blocker / "w"} is not writable' in proc.stderr
