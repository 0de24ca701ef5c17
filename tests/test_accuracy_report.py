"""benchmarks/accuracy_report.py on two fake labels of two runs each: table numbers, figure."""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))

import accuracy_report  # pylint: disable=g-import-not-at-top,wrong-import-position


def fake_run(directory, f1, auc, dice, wall_s, speed, loss0):
  """A finished run: metrics.jsonl (train + val rows), config.json, eval/test/metrics.json."""
  os.makedirs(os.path.join(directory, 'eval', 'test'))
  with open(os.path.join(directory, 'metrics.jsonl'), 'w', encoding='utf-8') as f:
    for step in (10, 20, 30, 40):
      f.write(json.dumps({'step': step, 'loss': loss0 / step, 'ce': 0.5 / step, 'mse': 0.1,
                          'ssim': 0.2, 'rmi': 0.3, 'lr': 0.1, 'images_per_s': speed}) + '\n')
      if step % 20 == 0:
        f.write(json.dumps({'step': step, 'val/dice': dice * step / 40}) + '\n')
  config = os.path.join(directory, 'config.json')
  with open(config, 'w', encoding='utf-8') as f:
    json.dump({}, f)
  metrics = os.path.join(directory, 'eval', 'test', 'metrics.json')
  with open(metrics, 'w', encoding='utf-8') as f:
    json.dump({'fov/f1': f1, 'fov/auc_roc': auc, 'fov/se': 0.8, 'fov/sp': 0.97, 'fov/acc': 0.96,
               'official/dice': dice, 'official/se': 0.79, 'official/sp': 0.98,
               'official/acc': 0.97}, f)
  os.utime(config, (1000.0, 1000.0))
  os.utime(metrics, (1000.0 + wall_s, 1000.0 + wall_s))


@pytest.fixture
def runs(tmp_path):
  fake_run(tmp_path / 'ours' / '0', 0.75, 0.97, 0.74, 1800, 1.2, 4.0)
  fake_run(tmp_path / 'ours' / '1', 0.77, 0.98, 0.76, 2400, 1.4, 4.0)
  fake_run(tmp_path / 'official' / '0', 0.70, 0.96, 0.69, 3000, 0.5, 8.0)
  fake_run(tmp_path / 'official' / '1', 0.72, 0.95, 0.71, 3600, 0.7, 8.0)
  return tmp_path


def test_table_holds_mean_and_std_over_seeds(runs):
  out = runs / 'report'
  assert accuracy_report.main(['--run', f'ours={runs}/ours/*', '--run',
                               f'official={runs}/official/*', '--out', str(out)]) == 0
  lines = (out / 'accuracy.md').read_text().splitlines()
  ours = next(l for l in lines if l.startswith('| ours |')).split(' | ')
  official = next(l for l in lines if l.startswith('| official |')).split(' | ')
  header = next(l for l in lines if l.startswith('| run |')).split(' | ')
  col = {h.strip(' |'): i for i, h in enumerate(header)}
  std = lambda a, b: f'{np.std([a, b], ddof=1):.2f}'  # pylint: disable=unnecessary-lambda-assignment
  assert ours[col['seeds']] == '2'
  assert ours[col['FOV F1']] == f'76.00 ± {std(75, 77)}'
  assert ours[col['FOV AUC-ROC']] == f'97.50 ± {std(97, 98)}'
  assert ours[col['Official Dice']] == f'75.00 ± {std(74, 76)}'
  assert ours[col['FOV Se']] == '80.00 ± 0.00'
  assert official[col['FOV F1']] == f'71.00 ± {std(70, 72)}'
  assert ours[col['train images/s']] == f'1.30 ± {std(1.2, 1.4)}'
  assert ours[col['wall time (min)']].strip(' |') == f'35.0 ± {np.std([30, 40], ddof=1):.1f}'
  assert official[col['wall time (min)']].strip(' |') == f'55.0 ± {np.std([50, 60], ddof=1):.1f}'


def test_figure_draws_every_label(runs):
  out = runs / 'report'
  accuracy_report.main(['--run', f'ours={runs}/ours/*', '--run', f'official={runs}/official/*',
                        '--out', str(out)])
  image = np.asarray(Image.open(out / 'curves.png').convert('RGB'))
  cols = 3
  rows = -(-len(accuracy_report.PANELS) // cols)
  assert image.shape[1] == cols * accuracy_report.PANEL_W
  assert image.shape[0] > rows * accuracy_report.PANEL_H
  for colour in accuracy_report.COLOURS[:2]:
    hits = np.all(image == colour, axis=-1)
    # The legend swatch alone is 30 x 3 px; the curves add many more.
    assert hits.sum() > 400, colour
  # The val/dice panel (the last) holds curves too, not only the loss panels.
  x0 = (len(accuracy_report.PANELS) - 1) % cols * accuracy_report.PANEL_W
  y0 = image.shape[0] - accuracy_report.PANEL_H
  panel = image[y0:, x0:x0 + accuracy_report.PANEL_W]
  for colour in accuracy_report.COLOURS[:2]:
    assert np.all(panel == colour, axis=-1).sum() > 50


def test_bad_input_is_one_error_line(runs, tmp_path):
  script = os.path.join(ROOT, 'benchmarks', 'accuracy_report.py')
  done = subprocess.run([sys.executable, script, '--run', f'x={tmp_path}/nothing/*',
                         '--out', str(tmp_path / 'r')], capture_output=True, text=True,
                        check=False)
  assert done.returncode == 2
  assert done.stderr.strip() == (f"error: --run 'x={tmp_path}/nothing/*': no run directory "
                                 f'(with metrics.jsonl) matches {tmp_path}/nothing/*')
  os.remove(runs / 'ours' / '1' / 'eval' / 'test' / 'metrics.json')
  with pytest.raises(accuracy_report.ReportError, match=r'ours/1/eval/test/metrics.json is '
                     r"missing: the run was not evaluated on 'test'"):
    accuracy_report.build_report([f'ours={runs}/ours/*'], 'test', str(tmp_path / 'r'))


def test_each_run_is_listed_with_its_own_numbers(runs):
  out = runs / 'report'
  accuracy_report.main(['--run', f'ours={runs}/ours/*', '--run', f'official={runs}/official/*',
                        '--out', str(out)])
  lines = [l for l in (out / 'accuracy.md').read_text().splitlines() if l.startswith('- ')]
  assert lines == [
      f'- ours: `{runs}/ours/0`: F1 75.00, AUC 97.00, 1.20 images/s, 30.0 min',
      f'- ours: `{runs}/ours/1`: F1 77.00, AUC 98.00, 1.40 images/s, 40.0 min',
      f'- official: `{runs}/official/0`: F1 70.00, AUC 96.00, 0.50 images/s, 50.0 min',
      f'- official: `{runs}/official/1`: F1 72.00, AUC 95.00, 0.70 images/s, 60.0 min']
