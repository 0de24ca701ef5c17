"""Progress lines and bars wherever a run is watched, and the curves.png figure."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ds2f_jax import curves, reporting, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------
# Progress.


def test_lines_with_rate_and_eta_when_not_a_terminal(capfd):
  progress = reporting.Progress(50, desc='eval test', unit='image')
  assert progress._bar is None  # pytest's stderr is not a terminal.
  for _ in range(50):
    progress.advance(1)
  progress.close()
  lines = [l for l in capfd.readouterr().err.splitlines() if 'eval test:' in l]
  # Every ~10 % (5 images) and the last one.
  assert 10 <= len(lines) <= 11, lines
  assert re.search(r'eval test: 5/50 images \| [\d.e+]+ image/s \| ETA \d+:\d\d:\d\d', lines[0])
  assert 'eval test: 50/50 images' in lines[-1] and 'ETA 0:00:00' in lines[-1]


def test_train_progress_shows_scalars_at_log_steps(capfd):
  progress = reporting.Progress(10, initial=4, desc='train')
  progress.update(5)  # The first step after a resume: compiles, no line.
  progress.update(6)
  progress.update(8, {'loss': 0.25})
  progress.close()
  lines = [l for l in capfd.readouterr().err.splitlines() if 'train:' in l]
  assert len(lines) == 1 and 'train: 8/10 steps loss=0.25' in lines[0], lines
  assert re.search(r'step/s \| ETA \d+:\d\d:\d\d', lines[0])


def test_notebook_gets_a_notebook_bar(monkeypatch):
  monkeypatch.setattr(reporting, 'in_notebook', lambda: True)
  progress = reporting.Progress(3, desc='predict', unit='image')
  from tqdm import auto
  assert isinstance(progress._bar, auto.tqdm)
  progress.advance(3)
  assert progress._bar.n == 3
  progress.close()


@pytest.mark.slow
def test_call_from_python_shows_progress_and_writes_curves(tiny_config, tmp_path, capfd):
  workdir = str(tmp_path / 'w')
  train.train_and_evaluate(tiny_config, workdir)
  err = capfd.readouterr().err
  assert re.search(r'train: 2/2 steps loss=\S+ .*\| ETA 0:00:00', err), err[-3000:]
  path = os.path.join(workdir, 'curves.png')
  img = np.asarray(Image.open(path).convert('RGB'))
  assert img.shape == (3 * curves.PANEL_HEIGHT, curves.WIDTH, 3)
  _assert_panels_drawn(img, 2)  # Loss and learning rate over the two steps.
  # One evaluation (step 2): the validation panel marks it as the best step.
  panel = img[2 * curves.PANEL_HEIGHT:]
  assert (np.abs(panel.astype(int) - curves.BEST_COLOUR).sum(-1) == 0).sum() > 50


@pytest.mark.slow
def test_redirected_run_logs_progress_with_eta(synthetic_data_dir, tmp_path):
  log = tmp_path / 'log.txt'
  with open(log, 'w') as f:
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'main.py'), '--config', 'configs/synthetic.py:tiny',
         '--workdir', str(tmp_path / 'w'), '--config.data.data_dir', synthetic_data_dir],
        stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, timeout=600)
  text = log.read_text()
  assert proc.returncode == 0, text[-3000:]
  assert re.search(r'train: 2/2 steps loss=\S+ .*\| ETA 0:00:00', text), text[-3000:]
  assert os.path.exists(tmp_path / 'w' / 'curves.png')


# ----------------------------------------------------------------------------
# curves.png.


def _plot_area(img, panel):
  left, top, right, bottom = curves._MARGIN
  y = panel * curves.PANEL_HEIGHT
  return img[y + top + 2:y + curves.PANEL_HEIGHT - bottom - 1, left + 2:curves.WIDTH - right - 1]


def _assert_panels_drawn(img, count):
  for panel in range(count):
    area = _plot_area(img, panel).reshape(-1, 3)
    # White background plus at least one drawn line.
    assert (area != 255).any(axis=1).mean() > 0.002, panel


def _rows():
  rows = []
  for step in range(1, 41):
    rows.append({'step': step, 'loss': 2.0 / step, 'ce': 1.0 / step, 'mse': 0.5, 'ssim': 0.2,
                 'rmi': 0.3 / step, 'lr': 0.01 * (1 - step / 41)})
    if step % 10 == 0:
      rows.append({'step': step, 'val/dice': [0.5, 0.8, 0.7, 0.6][step // 10 - 1],
                   'val/iou': [0.3, 0.6, 0.5, 0.4][step // 10 - 1]})
  return rows


def _write_jsonl(path, rows, tail=''):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    f.write(''.join(json.dumps(r) + '\n' for r in rows) + tail)


def test_curves_panels_and_best_step(tmp_path):
  # A resumed run logs step 20 twice (the newest wins) and a kill cut the last line.
  rows = _rows() + [{'step': 20, 'val/dice': 0.9, 'val/iou': 0.7}]
  _write_jsonl(str(tmp_path / 'metrics.jsonl'), rows, tail='{"step": 41, "lo')
  parsed = curves.read_rows(str(tmp_path / 'metrics.jsonl'))
  assert max(parsed) == 40 and parsed[20]['val/dice'] == 0.9 and parsed[20]['loss'] == 0.1
  assert curves.best_step(parsed) == (20, 0.9)
  img = np.asarray(Image.open(curves.write(str(tmp_path))).convert('RGB'))
  _assert_panels_drawn(img, 3)
  # The best step is marked by a vertical line at its x position.
  left, _, right, _ = curves._MARGIN
  x = round(left + (20 - 1) / (40 - 1) * (curves.WIDTH - right - left))
  column = _plot_area(img, 2)[:, x - left - 2 - 1:x - left - 2 + 2]
  assert (np.abs(column.astype(int) - curves.BEST_COLOUR).sum(-1) == 0).any(axis=1).mean() > 0.9


def test_curves_without_validation_say_so(tmp_path):
  _write_jsonl(str(tmp_path / 'metrics.jsonl'), [r for r in _rows() if 'loss' in r])
  img = np.asarray(Image.open(curves.write(str(tmp_path))).convert('RGB'))
  _assert_panels_drawn(img, 2)
  assert not (np.abs(img.astype(int) - curves.BEST_COLOUR).sum(-1) == 0).any()
  assert curves.write(str(tmp_path / 'nothing')) is None


def test_ablation_comparison_figure(tmp_path):
  runs = {}
  for i, name in enumerate(['ds2f', 'seg_only', 'missing']):
    runs[name] = str(tmp_path / name)
    if name != 'missing':
      _write_jsonl(os.path.join(runs[name], 'metrics.jsonl'),
                   [dict(r, **{'val/dice': r['val/dice'] - 0.1 * i}) if 'val/dice' in r else r
                    for r in _rows()])
  path = curves.write_comparison(str(tmp_path / 'curves.png'), runs)
  img = np.asarray(Image.open(path).convert('RGB'))
  assert img.shape == (2 * curves.PANEL_HEIGHT, curves.WIDTH, 3)
  _assert_panels_drawn(img, 2)
  # One colour per run in the Dice panel.
  area = _plot_area(img, 0).reshape(-1, 3)
  for colour in curves._COLOURS[:2]:
    assert (area == colour).all(axis=1).sum() > 20, colour
  assert curves.write_comparison(str(tmp_path / 'x.png'), {'a': str(tmp_path / 'none')}) is None


def test_prepare_from_python_says_so(tmp_path, capfd):
  from configs import synthetic
  from ds2f_jax import input_pipeline
  cfg = synthetic.get_config('tiny')
  cfg.data.data_dir = str(tmp_path / 'tfds')
  input_pipeline.prepare(cfg.data)
  assert f'Preparing synthetic_fundus in {tmp_path / "tfds"}' in capfd.readouterr().err
  input_pipeline.prepare(cfg.data)  # Prepared: nothing to say.
  assert 'Preparing' not in capfd.readouterr().err
