"""--mode eval / --mode predict: protocols against NumPy references, and end to end."""

import csv
import glob
import json
import math
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from ds2f_jax import evaluate, imaging, inference, input_pipeline, predict
from ds2f_jax import visualize
from ds2f_jax.auc import num_score_bins
from tests import auc_exact
from tests import scenario as rel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------
# NumPy float64 references (independent of ds2f_jax.metrics).


def _nearest(probs, size):
  """Nearest resize with src = floor(dst * in / out) in float64."""
  rows = np.minimum(np.floor(np.arange(size[0]) * probs.shape[0] / size[0]), probs.shape[0] - 1)
  cols = np.minimum(np.floor(np.arange(size[1]) * probs.shape[1] / size[1]), probs.shape[1] - 1)
  return probs[rows.astype(int)][:, cols.astype(int)]


def _counts(gt, pred, c):
  gt, pred = gt.astype(np.int64), pred.astype(np.int64)
  tp = np.sum((gt == c) & (pred == c))
  fp = np.sum((gt != c) & (pred == c))
  fn = np.sum((gt == c) & (pred != c))
  tn = gt.size - tp - fp - fn
  return float(tp), float(fp), float(fn), float(tn)


def _ref_metrics(gt, pred, c):
  tp, fp, fn, tn = _counts(gt, pred, c)
  div = lambda a, b: a / b if b else math.nan
  den = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
  return {'f1': div(2 * tp, 2 * tp + fp + fn), 'iou': div(tp, tp + fp + fn),
          'se': div(tp, tp + fn), 'sp': div(tn, tn + fp), 'acc': div(tp + tn, gt.size),
          'mcc': div(tp * tn - fp * fn, den)}


def _pairwise_auc(scores, labels):
  """P(s+ > s-) + 0.5 P(s+ == s-) by brute force over all pairs."""
  pos, neg = scores[labels], scores[~labels]
  if not pos.size or not neg.size:
    return math.nan
  diff = pos[:, None].astype(np.float64) - neg[None, :]
  return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def _close(a, b, tol=1e-9):
  return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


# ----------------------------------------------------------------------------
# The protocols on random probability maps (no model).


def _random_case(rng, num_classes, hr, size, fov_pixels=None):
  probs = rng.dirichlet(np.ones(num_classes), size=hr).astype(np.float32)
  mask = rng.integers(0, num_classes, size=size).astype(np.uint8)
  mask[rng.random(size) < 0.03] = 255  # Void pixels count nowhere.
  fov = (rng.random(size) < 0.8).astype(np.uint8)
  if fov_pixels is not None:  # FOV of a few background pixels only.
    fov[:] = 0
    fov.flat[:fov_pixels] = 1
    mask.flat[:fov_pixels] = 0
    probs[..., 0] = 0.9
    probs[..., 1:] = 0.1 / (num_classes - 1)
  return probs, mask, fov


@pytest.mark.parametrize('num_classes', [2, 3])
def test_protocols_match_numpy(num_classes):
  rng = np.random.default_rng(num_classes)
  names = ['bg'] + [f'c{i}' for i in range(1, num_classes)]
  cases = [_random_case(rng, num_classes, (8, 6), (21, 13)),
           _random_case(rng, num_classes, (8, 6), (16, 20)),
           _random_case(rng, num_classes, (8, 6), (21, 13), fov_pixels=5)]
  protocols = evaluate.Protocols(names)
  for i, (probs, mask, fov) in enumerate(cases):
    scores = jax.device_get(evaluate.score_image(probs, mask, fov, num_classes=num_classes))
    assert scores[0].shape == scores[1].shape == (num_classes, num_classes)
    assert scores[2].shape == (num_classes - 1, 2, num_score_bins())
    row = protocols.add({'index': i}, scores)
    assert row['index'] == i
  result = protocols.result()

  resized = [_nearest(p, m.shape) for p, m, _ in cases]
  preds = [np.argmax(p, axis=-1) for p in resized]
  valid = [m < num_classes for _, m, _ in cases]
  # Official: every valid pixel of every image in one confusion matrix.
  gt_all = np.concatenate([m[v] for (_, m, _), v in zip(cases, valid)])
  pr_all = np.concatenate([p[v] for p, v in zip(preds, valid)])
  inside = [v & (f > 0) for v, (_, _, f) in zip(valid, cases)]
  gt_fov = np.concatenate([m[v] for (_, m, _), v in zip(cases, inside)])
  pr_fov = np.concatenate([p[v] for p, v in zip(preds, inside)])

  per_class = {}
  for c in range(1, num_classes):
    suffix = '' if num_classes == 2 else f'/{names[c]}'
    off, fv = _ref_metrics(gt_all, pr_all, c), _ref_metrics(gt_fov, pr_fov, c)
    for k in ('se', 'sp', 'acc', 'iou', 'mcc'):
      assert _close(result[f'official/{k}{suffix}'], off[k]), (k, c)
      assert _close(result[f'fov/{k}{suffix}'], fv[k]), (k, c)
    assert _close(result[f'official/dice{suffix}'], off['f1'])
    assert _close(result[f'fov/f1{suffix}'], fv['f1'])
    scores = np.concatenate([r[..., c][v] for r, v in zip(resized, inside)])
    auc = _pairwise_auc(scores, gt_fov == c)
    assert abs(result[f'fov/auc_roc{suffix}'] - auc) < 1e-4
    assert abs(result[f'fov/auc_pr{suffix}'] - auc_exact.pr_auc(scores, gt_fov == c)) < 1e-4
    # Per image: mean / std over images, NaN (the few-pixel FOV has no vessel) skipped.
    f1s = [_ref_metrics(m[v], p[v], c)['f1'] for (_, m, _), p, v in zip(cases, preds, inside)]
    assert math.isnan(f1s[2])
    assert _close(result[f'fov/f1_per_image_mean{suffix}'], float(np.mean(f1s[:2])))
    assert _close(result[f'fov/f1_per_image_std{suffix}'], float(np.std(f1s[:2])))
    aucs = [_pairwise_auc(r[..., c][v], m[v] == c)
            for r, (_, m, _), v in zip(resized, cases, inside)]
    assert abs(result[f'fov/auc_roc_per_image_mean{suffix}'] - np.mean(aucs[:2])) < 1e-4
    per_class[c] = (off['f1'], fv['f1'])
  if num_classes > 2:  # The unsuffixed key is the mean over foreground classes.
    assert _close(result['official/dice'], np.mean([v[0] for v in per_class.values()]))
    assert _close(result['fov/f1'], np.mean([v[1] for v in per_class.values()]))
  else:
    assert not any(k.count('/') > 1 for k in result)
  md = evaluate.report({'num_images': 3, **result}, names, 'case', 'ckpt')
  tables = md.count('| Protocol | Se | Sp | Acc | AUC | F1 | IoU | MCC |')
  assert tables == (1 if num_classes == 2 else num_classes)  # Mean, then each class.
  assert f'| FOV, global | {100 * result["fov/se"]:.2f} |' in md


def test_rank_for_grid_skips_undefined_f1():
  rows = [{'index': i, 'fov/f1': f} for i, f in enumerate([0.5, math.nan, 0.1, 0.9, 0.3])]
  worst, best = evaluate.rank_for_grid(rows, per_side=4)
  assert [r['index'] for r in worst] == [2, 4]
  assert [r['index'] for r in best] == [3, 0]
  worst, best = evaluate.rank_for_grid(rows[:1], per_side=4)
  assert worst == [] and [r['index'] for r in best] == [0]


def test_overlay_colours():
  image = np.full((2, 3, 3), 100, np.uint8)
  gt = np.array([[1, 1, 0], [0, 0, 0]])
  pred = np.array([[1, 0, 1], [0, 0, 0]])
  out = visualize.overlay(image, pred, gt).astype(np.float64)
  a = visualize.OVERLAY_ALPHA
  blend = lambda colour: np.rint((1 - a) * 100 + a * np.asarray(colour, np.float64))
  np.testing.assert_array_equal(out[0, 0], blend(visualize.TP_COLOUR))
  np.testing.assert_array_equal(out[0, 1], blend(visualize.FN_COLOUR))
  np.testing.assert_array_equal(out[0, 2], blend(visualize.FP_COLOUR))
  np.testing.assert_array_equal(out[1], image[1])


# ----------------------------------------------------------------------------
# End to end: train, eval, predict.


def _main(*args, timeout=300):
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.environ['DS2F_TEST_XLA_CACHE'],
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0.5')
  return subprocess.run([sys.executable, os.path.join(ROOT, 'main.py'), *args],
                        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def _error_lines(proc):
  return [l for l in proc.stderr.strip().splitlines() if l.startswith('error:')]


REQUIRED_KEYS = (
    ['num_images'] + [f'official/{k}' for k in ('dice', 'iou', 'se', 'sp', 'acc', 'precision',
                                                'mcc')] +
    [f'fov/{k}' for k in ('f1', 'iou', 'se', 'sp', 'acc', 'mcc', 'auc_roc', 'auc_pr')] +
    ['fov/f1_per_image_mean', 'fov/f1_per_image_std', 'sr/psnr', 'sr/ssim'])


def _reference_eval(cfg, restored, source):
  """Official acc / FOV F1 / exact FOV ROC-AUC, recomputed with NumPy from the probabilities."""
  size = inference.lr_size(cfg)
  gts, preds, gts_fov, preds_fov, scores = [], [], [], [], []
  for i in range(len(source)):
    rec = source[i]
    lr = inference.stack_padded([imaging.bicubic_normalised(rec['image'], size)],
                                cfg.eval.batch_size)
    probs, _ = inference.predict_probs(restored.model, restored.variables, lr)
    mask, fov = rec['mask'][..., 0], rec['fov'][..., 0] > 0
    p = _nearest(np.asarray(probs[0]), mask.shape)
    pred = np.argmax(p, axis=-1)
    gts.append(mask.ravel()), preds.append(pred.ravel())
    gts_fov.append(mask[fov]), preds_fov.append(pred[fov]), scores.append(p[..., 1][fov])
  gt, pred = np.concatenate(gts), np.concatenate(preds)
  gt_fov, pred_fov = np.concatenate(gts_fov), np.concatenate(preds_fov)
  return {'official/acc': float(np.mean(gt == pred)),
          'fov/f1': _ref_metrics(gt_fov, pred_fov, 1)['f1'],
          'fov/auc_roc': auc_exact.roc_auc(np.concatenate(scores), gt_fov == 1)}


@pytest.mark.slow
def test_train_eval_predict_end_to_end(reference_run, synthetic_data_dir, tmp_path):
  cfg = rel.scenario_config(synthetic_data_dir)
  workdir = str(tmp_path / 'w')

  # Eval before training: one line naming the empty workdir.
  os.makedirs(workdir)
  proc = _main('--config', 'configs/synthetic.py:tiny', '--workdir', workdir, '--mode', 'eval',
               '--config.data.data_dir', cfg.data.data_dir)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = _error_lines(proc)
  assert len(lines) == 1 and f'no checkpoint in workdir {workdir}' in lines[0], proc.stderr
  assert 'Traceback' not in proc.stderr

  os.rmdir(workdir)
  shutil.copytree(reference_run, workdir)  # Trained: the shared 6-step run (tests/conftest.py).
  events = b''.join(open(f, 'rb').read()
                    for f in glob.glob(os.path.join(workdir, 'tensorboard', '*')))
  for panel in ('1_lr_input', '2_sr_output', '3_hr_prediction', '4_ground_truth', '5_errors'):
    assert f'val_images/{panel}'.encode() in events, panel

  # --mode eval.
  cfg.eval.sr_metrics = True
  result = evaluate.evaluate(cfg, workdir)
  out_dir = os.path.join(workdir, 'eval', 'test')
  with open(os.path.join(out_dir, 'metrics.json')) as f:
    written = json.load(f)
  assert written.keys() == result.keys()
  source = input_pipeline.prepare(cfg.data).as_data_source('test')
  assert written['num_images'] == len(source) == 16
  assert written['checkpoint_step'] == 6
  for key in REQUIRED_KEYS:
    assert key in written, key
  for key, v in written.items():
    if key in ('num_images', 'checkpoint_step', 'sr/psnr', 'checkpoint', 'config'):
      continue
    low = -1.0 if 'mcc' in key else 0.0  # MCC lies in [-1, 1].
    assert math.isnan(v) or low <= v <= 1.0, (key, v)
  assert written['sr/psnr'] > 0 and np.isfinite(written['sr/psnr'])
  assert np.isfinite(written['fov/auc_roc']) and np.isfinite(written['fov/auc_pr'])
  restored = inference.restore(cfg, workdir, 'latest')
  restored_sr = inference.restore(cfg, workdir, 'latest', with_sr=True)
  # Only the inference graph is restored: no MSCG, the SR stream only when asked for.
  assert set(restored.variables['params']) == {'encoder', 'seg_decoder', 'out_conv'}
  assert set(restored_sr.variables['params']) == {'encoder', 'seg_decoder', 'out_conv',
                                                  'sr_decoder', 'sr_head'}
  # with_sr leaves the segmentation output alone, and its BatchNorm is in inference
  # mode: image 0's SR output does not depend on the rest of the batch.
  size = inference.lr_size(cfg)
  lrs = [imaging.bicubic_normalised(source[i]['image'], size) for i in range(3)]
  alone = inference.predict_probs(restored_sr.model, restored_sr.variables,
                                  inference.stack_padded(lrs[:1], 8), with_sr=True)
  mixed = inference.predict_probs(restored_sr.model, restored_sr.variables,
                                  inference.stack_padded(lrs, 8), with_sr=True)
  plain, none = inference.predict_probs(restored.model, restored.variables,
                                        inference.stack_padded(lrs, 8))
  assert none is None and mixed[1].shape == (8, 64, 64, 3)
  np.testing.assert_allclose(np.asarray(mixed[0]), np.asarray(plain), atol=1e-6)
  np.testing.assert_allclose(np.asarray(alone[1][0]), np.asarray(mixed[1][0]), atol=1e-5)
  ref = _reference_eval(cfg, restored, source)
  assert written['official/acc'] == pytest.approx(ref['official/acc'], abs=1e-12)
  assert _close(written['fov/f1'], ref['fov/f1'])
  assert abs(written['fov/auc_roc'] - ref['fov/auc_roc']) < 1e-4
  with open(os.path.join(out_dir, 'per_image.csv')) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 16 and {r['file_name'] for r in rows} == {
      f'test_{i:04d}.png' for i in range(16)}
  assert all(int(r['height']) == int(r['width']) == 256 for r in rows)
  report = open(os.path.join(out_dir, 'report.md')).read()
  assert '| Protocol | Se | Sp | Acc | AUC | F1 |' in report and 'PSNR' in report
  assert f'{100 * written["official/acc"]:.2f}' in report
  grid = Image.open(os.path.join(out_dir, 'best_worst.png'))
  assert grid.mode == 'RGB' and grid.height > 4 * 160

  # --mode predict on a folder: RGB PNG, grey JPEG, RGBA TIFF, an unreadable file, a mask.
  rec = source[0]
  inputs, masks, out = tmp_path / 'in', tmp_path / 'masks', tmp_path / 'out'
  inputs.mkdir(), masks.mkdir()
  Image.fromarray(rec['image']).save(inputs / 'a.png')
  Image.fromarray(rec['image']).convert('L').resize((70, 90)).save(inputs / 'b.jpg')
  Image.fromarray(rec['image']).convert('RGBA').resize((120, 100)).save(inputs / 'c.tif')
  (inputs / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really a png')
  (inputs / 'notes.txt').write_text('not an image')
  Image.fromarray(rec['mask'][..., 0] * 255).save(masks / 'a.png')
  res = predict.predict(cfg, workdir, str(inputs), str(out), str(masks))
  assert [os.path.basename(p) for p in res['written']] == ['a.png', 'b.jpg', 'c.tif']
  assert list(res['failed']) == ['broken.png']
  assert 'broken.png' in res['failed']['broken.png']
  for stem, (w, h) in {'a': (256, 256), 'b': (70, 90), 'c': (120, 100)}.items():
    prob = Image.open(out / f'{stem}_prob.png')
    assert prob.mode == 'I;16' and prob.size == (w, h)
    mask = Image.open(out / f'{stem}_mask.png')
    assert mask.size == (w, h) and set(np.unique(np.asarray(mask))) <= {0, 255}
    overlay = Image.open(out / f'{stem}_overlay.png')
    assert overlay.mode == 'RGB' and overlay.size == (w, h)
  assert sorted(os.listdir(out)) == sorted(f'{s}_{k}.png' for s in 'abc'
                                           for k in ('prob', 'mask', 'overlay'))
  # The 16-bit map is the probability of the model, resized to the original size.
  lr = inference.stack_padded(
      [imaging.bicubic_normalised(rec['image'], inference.lr_size(cfg))], cfg.eval.batch_size)
  probs, _ = inference.predict_probs(restored.model, restored.variables, lr)
  p = _nearest(np.asarray(probs[0]), (256, 256))
  prob16 = np.asarray(Image.open(out / 'a_prob.png'), np.float64) / 65535
  np.testing.assert_allclose(prob16, p[..., 1], atol=0.5 / 65535 + 1e-7)
  # With a ground truth the overlay shows TP / FP / FN; without, predicted vessels only.
  gt, pred = rec['mask'][..., 0], np.argmax(p, axis=-1)
  expected = visualize.overlay(rec['image'], pred, gt)
  np.testing.assert_array_equal(np.asarray(Image.open(out / 'a_overlay.png')), expected)
  assert np.any(expected != rec['image'])

  # Through main.py: the unreadable file is named, the others written, the exit code non-zero.
  out2 = tmp_path / 'out2'
  proc = _main('--config', 'configs/synthetic.py:tiny', '--workdir', workdir, '--mode',
               'predict', '--config.data.data_dir', cfg.data.data_dir, '--config.eval.checkpoint',
               'latest', '--input', str(inputs), '--output', str(out2))
  assert proc.returncode == 2, proc.stderr[-3000:]
  lines = _error_lines(proc)
  assert len(lines) == 1 and 'broken.png' in lines[0], proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr
  assert len(os.listdir(out2)) == 9
