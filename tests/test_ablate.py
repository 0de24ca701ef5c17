"""The ablation driver: presets, the table's statistics, and 2 variants x 1 seed end to end."""

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import ablations, default
from ds2f_jax import ablate, evaluate, flops, imaging, inference, input_pipeline, train
from ds2f_jax.models import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_presets_are_valid_and_leave_the_base_alone():
  base = default.get_config()
  base.loss.mse_weight = 0.5  # A user override survives every preset that does not set it.
  variants = {}
  for name in ablations.PRESETS:
    cfg = ablations.apply(base, name)
    registry.validate(cfg.model)
    variants[name] = cfg.model.variant
    assert cfg.loss.mse_weight == (0.0 if name == 'no_sr_mse' else 0.5), name
  assert variants == {'seg_only': 'seg_only', 'seg_hr': 'seg_hr', 'dual_stream': 'dual_stream',
                      'ds2f_after': 'ds2f_after', 'ds2f': 'ds2f', 'rcab_global_pool': 'ds2f',
                      'no_proxy_ssim': 'ds2f', 'no_proxy_rmi': 'ds2f', 'no_proxy': 'ds2f',
                      'no_sr_mse': 'ds2f'}
  assert set(ablations.DEFAULT_VARIANTS) == {'seg_only', 'seg_hr', 'dual_stream', 'ds2f_after',
                                             'ds2f'}
  cfg = ablations.apply(base, 'no_proxy')
  assert (cfg.loss.ssim_weight, cfg.loss.rmi_weight, cfg.loss.ce_weight) == (0.0, 0.0, 1.0)
  assert ablations.apply(base, 'rcab_global_pool').model.rcab_global_pool is True
  assert ablations.apply(base, 'no_proxy_rmi').loss.ssim_weight == 1.0
  assert (base.model.variant, base.loss.ssim_weight, base.model.rcab_global_pool) == (
      'ds2f', 1.0, False)
  with pytest.raises(ValueError, match="unknown ablation preset 'nope'; choose from seg_only"):
    ablations.apply(base, 'nope')


def test_summary_is_mean_and_sample_std_over_seeds():
  rng = np.random.default_rng(0)
  values = rng.random((3, 2))
  records = [{'metrics': {'official/dice': float(a), 'fov/f1': float(b), 'num_images': 5},
              'images_per_s': 10.0 + i} for i, (a, b) in enumerate(values)]
  s = ablate.summarize(records)
  for j, key in enumerate(('official/dice', 'fov/f1')):
    x = values[:, j].astype(np.float64)
    assert s[key]['mean'] == pytest.approx(x.sum() / 3, abs=1e-15)
    assert s[key]['std'] == pytest.approx(math.sqrt(((x - x.mean()) ** 2).sum() / 2), abs=1e-15)
    assert s[key]['n'] == 3
  assert s['images_per_s'] == {'mean': 11.0, 'std': 1.0, 'n': 3}
  one = ablate.summarize(records[:1])
  assert one['fov/f1'] == {'mean': float(values[0, 1]), 'std': None, 'n': 1}
  assert ablate._cell(s['images_per_s'], 1.0, 1) == '11.0 ± 1.0'
  assert ablate._cell(one['fov/f1']) == f'{100 * values[0, 1]:.2f}'
  assert ablate._cell({'mean': math.nan, 'std': None, 'n': 1}) == '–'
  with pytest.raises(ValueError, match="--variants names 'ds2f' twice"):
    ablate.run(default.get_config(), '/nonexistent/never/written', ['ds2f', 'ds2f'])
  with pytest.raises(ValueError, match='--variants is empty'):
    ablate.run(default.get_config(), '/nonexistent/never/written', [])
  with pytest.raises(ValueError, match='--seeds=0 must be >= 1'):
    ablate.seeds_of(default.get_config(), 0)
  assert ablate.seeds_of(default.get_config(), 3) == [0, 1, 2]


def _average_ranks(x):
  order = np.argsort(x, kind='mergesort')
  ranks = np.empty(len(x), np.float64)
  ranks[order] = np.arange(1, len(x) + 1)
  _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
  sums = np.bincount(inverse, weights=ranks)
  return (sums / counts)[inverse]


def _roc_auc(scores, positive):
  """Mann-Whitney U in float64, ties counted half."""
  n_pos, n_neg = positive.sum(), (~positive).sum()
  ranks = _average_ranks(scores.astype(np.float64))
  return (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _seg_only_reference(cfg, directory):
  """Official acc and FOV ROC-AUC of seg_only recomputed: LR in, LR out, nearest to 256."""
  restored = inference.restore(cfg, directory, cfg.eval.checkpoint)
  source = input_pipeline.split_source(cfg, 'test')
  records = [source[i] for i in range(len(source))]
  probs = []
  for start in range(0, len(records), cfg.eval.batch_size):
    lr = inference.stack_padded([imaging.bicubic_normalised(r['image'], (32, 32))
                                 for r in records[start:start + cfg.eval.batch_size]],
                                cfg.eval.batch_size)
    out, _ = inference.predict_probs(restored.model, restored.variables, lr)
    assert out.shape == (cfg.eval.batch_size, 32, 32, 2)  # Predicted at LR ...
    probs += list(np.asarray(out, np.float64))
  gts, preds, scores, fovs = [], [], [], []
  rows = np.floor(np.arange(256) * 32 / 256).astype(int)  # ... then nearest to 256 x 256.
  for rec, p in zip(records, probs):
    up = p[rows][:, rows]
    gts.append(rec['mask'][..., 0].ravel())
    preds.append(np.argmax(up, axis=-1).ravel())
    scores.append(up[..., 1].ravel())
    fovs.append(rec['fov'][..., 0].ravel() > 0)
  gt, pred, score, fov = (np.concatenate(a) for a in (gts, preds, scores, fovs))
  return {'official/acc': float(np.mean(gt == pred)),
          'fov/auc_roc': float(_roc_auc(score[fov], gt[fov] == 1))}


def _same(a, b):
  """Equal, NaN included (a metric with an empty denominator is NaN in both)."""
  return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


@pytest.mark.slow
def test_two_variants_one_seed_end_to_end(tiny_config, tmp_path, monkeypatch):
  cfg = tiny_config
  workdir = str(tmp_path / 'w')
  result = ablate.run(cfg, workdir, ['seg_only', 'ds2f'], seeds=1)

  runs = {}
  for name in ('seg_only', 'ds2f'):
    directory = os.path.join(workdir, name, '0')
    with open(os.path.join(directory, 'eval', 'test', 'metrics.json')) as f:
      runs[name] = json.load(f)
    assert _same(result['variants'][name]['runs']['0']['metrics'], runs[name])
    rows = _jsonl(os.path.join(directory, 'metrics.jsonl'))
    train_rows = [r for r in rows if 'loss' in r]
    assert [r['step'] for r in train_rows] == [1, 2]
    speeds = [r['images_per_s'] for r in rows if 'images_per_s' in r]
    assert result['variants'][name]['runs']['0']['images_per_s'] == float(np.median(speeds))
    with open(os.path.join(directory, 'eval', 'test', 'per_image.csv')) as f:
      assert all(r['height'] == r['width'] == '256' for r in csv.DictReader(f))
  # One figure compares the variants' validation curves (Dice and IoU panels).
  from PIL import Image
  from ds2f_jax import curves
  with Image.open(os.path.join(workdir, 'curves.png')) as figure:
    assert figure.size == (curves.WIDTH, 2 * curves.PANEL_HEIGHT)
  # seg_only trained on CE alone; ds2f on all four terms.
  seg_rows = [r for r in _jsonl(os.path.join(workdir, 'seg_only', '0', 'metrics.jsonl'))
              if 'loss' in r]
  assert all('ce' in r and not {'mse', 'ssim', 'rmi'} & set(r) for r in seg_rows)
  ds2f_rows = [r for r in _jsonl(os.path.join(workdir, 'ds2f', '0', 'metrics.jsonl'))
               if 'loss' in r]
  assert all({'ce', 'mse', 'ssim', 'rmi'} <= set(r) for r in ds2f_rows)

  # seg_only is evaluated on its LR output, nearest-resized to the original size.
  seg_cfg = ablate.run_config(cfg, 'seg_only', 0)
  ref = _seg_only_reference(seg_cfg, os.path.join(workdir, 'seg_only', '0'))
  assert runs['seg_only']['official/acc'] == pytest.approx(ref['official/acc'], abs=1e-12)
  assert abs(runs['seg_only']['fov/auc_roc'] - ref['fov/auc_roc']) < 1e-4

  # Per-image cost, from flops.model_costs at the variant's input size.
  costs = {n: result['variants'][n]['cost'] for n in ('seg_only', 'ds2f')}
  direct = flops.model_costs(seg_cfg.model, (32, 32))
  assert costs['seg_only'] == {p: {'flops': c.flops, 'params': c.params}
                               for p, c in direct.items()}
  # Same segmentation network at the same LR input; only DS2F's training graph is larger.
  assert costs['seg_only']['inference'] == costs['ds2f']['inference']
  assert costs['seg_only']['train'] == costs['seg_only']['inference']
  assert costs['ds2f']['train']['flops'] > 2 * costs['ds2f']['inference']['flops']
  assert result['variants']['seg_only']['output_size'] == [32, 32]
  assert result['variants']['ds2f']['output_size'] == [64, 64]

  # The table: one row per variant, with the numbers of metrics.json.
  table = open(os.path.join(workdir, 'ablation.md'), encoding='utf-8').read()
  assert '| Variant | Input → output | Seeds | Dice | IoU | Se | Sp | Acc | FOV F1 | FOV AUC |' in table
  lines = {l.split(' | ')[0][2:]: l for l in table.splitlines() if l.startswith('| seg_only')
           or l.startswith('| ds2f')}
  assert set(lines) == {'seg_only', 'ds2f'}
  assert lines['seg_only'].startswith('| seg_only | 32×32 → 32×32 | 1 | ')
  assert lines['ds2f'].startswith('| ds2f | 32×32 → 64×64 | 1 | ')
  for name, line in lines.items():
    cells = [c.strip() for c in line.strip('|').split('|')]
    m = runs[name]
    assert cells[3:10] == [f'{100 * m[k]:.2f}' for k, _ in ablate.TABLE_METRICS]
    assert cells[10] == f'{costs[name]["inference"]["flops"] / 1e9:.4g}'
    assert cells[13] == f'{costs[name]["inference"]["params"]:,}'
  with open(os.path.join(workdir, 'ablation.json')) as f:
    assert _same(json.load(f)['variants']['ds2f']['runs']['0']['metrics'], runs['ds2f'])

  # Rerunning skips finished runs: neither training nor evaluation runs again.
  def refuse(*args, **kwargs):
    raise AssertionError('a finished run was trained or evaluated again')

  monkeypatch.setattr(train, 'train_and_evaluate', refuse)
  monkeypatch.setattr(evaluate, 'evaluate', refuse)
  again = ablate.run(cfg, workdir, ['seg_only', 'ds2f'], seeds=1)
  assert _same(again['variants'], result['variants'])
  # A run trained with other settings is refused, not mixed into the table.
  changed = cfg.copy_and_resolve_references()
  changed.optim.learning_rate = 0.1
  with pytest.raises(ValueError, match=r'ds2f/0 was trained with optim.learning_rate=0.05, '
                                       r'this run has 0.1'):
    ablate.run(changed, workdir, ['ds2f'], seeds=1)

  # The command line: the same command finds everything finished and rewrites the same table.
  os.remove(os.path.join(workdir, 'ablation.md'))
  proc = _ablate('--workdir', workdir, '--variants', 'seg_only,ds2f',
                 '--config.data.data_dir', cfg.data.data_dir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert open(os.path.join(workdir, 'ablation.md'), encoding='utf-8').read() == table


def _ablate(*args):
  return subprocess.run(
      [sys.executable, '-m', 'ds2f_jax.ablate', '--config', 'configs/synthetic.py:tiny', *args],
      capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.mark.parametrize('args, expected', [
    (('--variants', 'seg_only,nope'), "unknown ablation preset 'nope'"),
    (('--config.model.nam=x',), "unknown config key --config.model.nam ('nam' is not a key of "
     "configs/synthetic.py:tiny (did you mean 'name'?))"),
    (('--seeds', 'x'), 'flag --seeds=x'),
])
def test_bad_input_is_one_line(args, expected, tmp_path):
  proc = _ablate('--workdir', str(tmp_path / 'w'), *args)
  lines = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr and not os.path.exists(tmp_path / 'w' / 'ds2f')
