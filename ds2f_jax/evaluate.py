"""`--mode eval`: both evaluation protocols (docs/method.md D13) on one split.

Every image of `config.eval.split` is predicted at its original size as in
`inference` and scored twice:

* official: argmax over the whole image, one confusion matrix accumulated over
  every pixel of the split (micro average), docs/method.md §Metric definitions;
* fov: inside the dataset's field-of-view mask, the same global confusion
  matrix plus the mean and std over images, and ROC-AUC / PR-AUC of the
  foreground probability from a streaming histogram (error < 1e-4; see
  `auc.score_bins`).

Resizing, argmax, the confusion matrices and the histograms run jitted on the
device (one compile per distinct original size); counts are summed on the
host in int64. Writes WORKDIR/eval/<split>/{metrics.json, per_image.csv,
report.md, best_worst.png}.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os

import grain
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ds2f_jax import auc, confusion, imaging, inference, input_pipeline, metrics
from ds2f_jax import reporting, sr_quality, visualize

# Images shown per side (worst / best by FOV F1) in best_worst.png.
GRID_IMAGES_PER_SIDE = 4


@functools.partial(jax.jit, static_argnames=('num_classes',))
def score_image(probs_hr, mask, fov, num_classes: int):
  """One image at its original size (mask.shape): the device half of both protocols.

  probs_hr (h, w, C) softmax at HR; mask (H, W) class ids (ids >= C are void);
  fov (H, W), > 0 inside. Returns the official (C, C) and FOV (C, C) confusion
  matrices and (C - 1, 2, B) FOV score histograms of classes 1..C-1.
  """
  probs = metrics.nearest_resize_probs(probs_hr, mask.shape)
  pred = jnp.argmax(probs, axis=-1)
  inside = (fov > 0).astype(jnp.int32)
  cm_all = confusion.confusion_matrix(mask, pred, num_classes)
  cm_fov = confusion.confusion_matrix(mask, pred, num_classes, weights=inside)
  scored = inside * (mask < num_classes)  # Void labels (e.g. 255) have no class.
  hists = jnp.stack([auc.score_histogram(probs[..., c], mask == c, scored)
                     for c in range(1, num_classes)])
  return cm_all, cm_fov, hists


@jax.jit
def _sr_scores(sr, hr):
  """PSNR and SSIM per image on [0, 1] images (SR clipped to the data range)."""
  to01 = lambda x: (jnp.clip(x, -1.0, 1.0) + 1.0) * 0.5
  return sr_quality.psnr(to01(sr), to01(hr)), sr_quality.ssim(to01(sr), to01(hr))


def _keys(prefix: str, summary: dict) -> dict:
  """summarize_confusion keys -> 'official/dice', 'fov/f1/cup' (F1 is Dice, by its name)."""
  out = {}
  for k, v in summary.items():
    base, _, cls = k.partition('/')
    if prefix == 'fov' and base == 'dice':
      base = 'f1'
    out[f'{prefix}/{base}' + (f'/{cls}' if cls else '')] = v
  return out


def _auc_keys(per_class: list[dict], class_names) -> dict:
  """fov/auc_roc, fov/auc_pr, fov/ap from the AUCs of classes 1..C-1 (the keys of
  `auc.aucs_from_counts`); also per class when C > 2."""
  per = {k: [a[k] for a in per_class] for k in ('auc_roc', 'auc_pr', 'ap')}
  out = {}
  for k, values in per.items():
    out[f'fov/{k}'] = values[0] if len(values) == 1 else confusion.nan_mean(values)
    if len(values) > 1:
      for name, v in zip(class_names[1:], values):
        out[f'fov/{k}/{name}'] = v
  return out


def _per_image_stats(rows: list[dict]) -> dict:
  """Mean and std over images of every fov/ key: 'fov/f1_per_image_mean[/class]'."""
  out = {}
  for key in rows[0]:
    if not key.startswith('fov/'):
      continue
    _, base, *cls = key.split('/')
    suffix = f'/{cls[0]}' if cls else ''
    values = [r[key] for r in rows]
    out[f'fov/{base}_per_image_mean{suffix}'] = confusion.nan_mean(values)
    out[f'fov/{base}_per_image_std{suffix}'] = confusion.nan_std(values)
  return out


class Protocols:
  """Host half of both protocols: int64 totals and one row per image."""

  def __init__(self, class_names: list[str]):
    self.names = list(class_names)
    c = len(self.names)
    self.official = confusion.ConfusionAccumulator(c)
    self.fov = confusion.ConfusionAccumulator(c)
    self.hists = [auc.HistogramAccumulator() for _ in range(c - 1)]  # Classes 1..C-1.
    self.rows = []

  def add(self, info: dict, scores, sr_scores=None) -> dict:
    """info: leading CSV columns (index, file_name, ...); scores: host `score_image` output."""
    cm_all, cm_fov, hist = scores
    self.official.update(cm_all)
    self.fov.update(cm_fov)
    for acc, h in zip(self.hists, hist):
      acc.update(h)
    row = dict(info)
    row.update(_keys('fov', confusion.summarize_confusion(cm_fov, self.names)))
    row.update(_auc_keys([auc.aucs_from_counts(h) for h in hist], self.names))
    row.update(_keys('official', confusion.summarize_confusion(cm_all, self.names)))
    if sr_scores is not None:
      row['sr/psnr'], row['sr/ssim'] = (float(v) for v in sr_scores)
    self.rows.append(row)
    return row

  def result(self) -> dict:
    """The flat metrics of metrics.json (without num_images / checkpoint_step)."""
    if not self.rows:
      raise ValueError('no images were evaluated')
    out = _keys('official', self.official.compute(self.names))
    out.update(_keys('fov', self.fov.compute(self.names)))
    out.update(_auc_keys([a.compute() for a in self.hists], self.names))
    out.update(_per_image_stats(self.rows))
    if 'sr/psnr' in self.rows[0]:
      for k in ('sr/psnr', 'sr/ssim'):
        out[k] = confusion.nan_mean([r[k] for r in self.rows])
    return out


def _plane(x) -> np.ndarray:
  x = np.asarray(x)
  return x[..., 0] if x.ndim == 3 else x


def _file_name(record, split: str, index: int) -> str:
  name = record.get('file_name', b'')
  name = name.decode() if isinstance(name, bytes) else str(name)
  return name or f'{split}_{index:05d}'


def _loader(config, source, split: str, with_hr: bool):
  """index -> dict(name, image, lr, mask, fov[, hr]) at the original size."""
  size = inference.lr_size(config)
  hr_size = tuple(int(v) for v in config.data.hr_size)

  def load(index: int) -> dict:
    record = source[index]
    image = np.asarray(record['image'])
    ex = {'index': index, 'name': _file_name(record, split, index), 'image': image,
          'lr': imaging.bicubic_normalised(image, size), 'mask': _plane(record['mask']),
          'fov': _plane(record['fov'])}
    if with_hr:
      ex['hr'] = imaging.bicubic_normalised(image, hr_size)
    return ex

  return load


def evaluate(config, workdir: str) -> dict:
  """Everything `--mode eval` does; returns the metrics written to metrics.json."""
  split = str(config.eval.split)
  with_sr = bool(config.eval.sr_metrics)
  num_classes = int(config.model.num_classes)
  restored = inference.restore(config, workdir, config.eval.checkpoint, with_sr=with_sr)
  builder = input_pipeline.prepare(config.data)
  source = input_pipeline.split_source(config, split, 'eval.split')
  count = len(source)
  if count == 0:
    raise ValueError(f'eval.split={split!r} of {builder.info.full_name} has no examples')
  names = inference.class_names(config)
  batch_size = int(config.eval.batch_size or config.batch_size)
  load = _loader(config, source, split, with_sr)
  options = grain.ReadOptions(num_threads=input_pipeline.num_workers(config),
                              prefetch_buffer_size=max(int(config.data.prefetch), 1))
  examples = grain.MapDataset.range(count).map(load).to_iter_dataset(options)

  protocols = Protocols(names)
  progress = reporting.Progress(count, desc=f'eval {split}', unit='image')
  for chunk in inference.chunks(examples, batch_size):
    lr = inference.stack_padded([e['lr'] for e in chunk], batch_size)
    probs, sr = inference.predict_probs(restored.model, restored.variables, lr, with_sr=with_sr)
    scores = [score_image(probs[j], e['mask'], e['fov'], num_classes=num_classes)
              for j, e in enumerate(chunk)]
    sr_scores = None
    if with_sr:
      sr_scores = _sr_scores(sr, inference.stack_padded([e['hr'] for e in chunk], batch_size))
    scores, sr_scores = jax.device_get((scores, sr_scores))
    for j, (e, s) in enumerate(zip(chunk, scores)):
      info = {'index': e['index'], 'file_name': e['name'], 'height': e['mask'].shape[0],
              'width': e['mask'].shape[1]}
      protocols.add(info, s, None if sr_scores is None else (sr_scores[0][j], sr_scores[1][j]))
    progress.advance(len(chunk))
  progress.close()

  rows = protocols.rows
  # What the numbers were computed with: the checkpoint and the whole config.
  result = {'num_images': count, 'checkpoint_step': restored.step, **protocols.result(),
            'checkpoint': f'{restored.checkpoint_dir}/{restored.step}',
            'config': inference.plain_config(config)}
  if jax.process_index() == 0:
    out_dir = os.path.join(os.path.abspath(workdir), 'eval', split)
    try:
      os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
      raise PermissionError(f'cannot create {out_dir}: {e.strerror}') from None
    _write_json(os.path.join(out_dir, 'metrics.json'), result)
    _write_csv(os.path.join(out_dir, 'per_image.csv'), rows)
    grid_rows = _grid_rows(config, restored, load, rows)
    visualize.save_png(os.path.join(out_dir, 'best_worst.png'), visualize.grid(grid_rows))
    with open(os.path.join(out_dir, 'report.md'), 'w', encoding='utf-8') as f:
      f.write(report(result, names, title=f'{builder.info.full_name}, split {split}',
                     checkpoint=f'{restored.checkpoint_dir}/{restored.step}',
                     grid_captions=[c for c, _ in grid_rows]))
    logging.info('Wrote %s: official dice %.4f, fov f1 %.4f, fov auc_roc %.4f.', out_dir,
                 result['official/dice'], result['fov/f1'], result['fov/auc_roc'])
  return result


def _write_json(path: str, result: dict) -> None:
  # NaN (a metric with an empty denominator) is written as NaN, as in metrics.jsonl.
  with open(path, 'w', encoding='utf-8') as f:
    json.dump({k: v.item() if hasattr(v, 'item') else v for k, v in result.items()}, f,
              indent=2)


def _write_csv(path: str, rows: list[dict]) -> None:
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    for r in rows:
      writer.writerow({k: (f'{v:.6g}' if isinstance(v, float) else v) for k, v in r.items()})


def rank_for_grid(rows: list[dict], per_side: int = GRID_IMAGES_PER_SIDE):
  """(worst, best) row lists by FOV F1; images whose F1 is undefined are left out."""
  scored = sorted((r for r in rows if not math.isnan(r['fov/f1'])),
                  key=lambda r: (r['fov/f1'], r['index']))
  k = min(per_side, len(scored) // 2)
  best = scored[k:][-per_side:][::-1]
  return scored[:k], best


def _grid_rows(config, restored, load, rows):
  """(caption, [image, ground truth, prediction, errors]) for the worst and best images."""
  worst, best = rank_for_grid(rows)
  picked = [('best', i + 1, r) for i, r in enumerate(best)] + \
           [('worst', i + 1, r) for i, r in enumerate(worst)]
  if not picked:  # No image has a defined F1: show the first ones instead.
    picked = [('image', i + 1, r) for i, r in enumerate(rows[:GRID_IMAGES_PER_SIDE])]
  batch_size = int(config.eval.batch_size or config.batch_size)
  c = int(config.model.num_classes)
  out = []
  for part in inference.chunks(picked, batch_size):
    examples = [load(r['index']) for _, _, r in part]
    lr = inference.stack_padded([e['lr'] for e in examples], batch_size)
    probs, _ = inference.predict_probs(restored.model, restored.variables, lr)
    probs = np.asarray(probs)
    for (side, rank, r), e, p in zip(part, examples, probs):
      pred = np.argmax(imaging.resize_nearest(p, e['mask'].shape), axis=-1)
      caption = (f'{side} {rank}: {r["file_name"]} ({r["height"]}x{r["width"]}), '
                 f'FOV F1 {_pct(r["fov/f1"])} %')
      out.append((caption, [e['image'], visualize.label_levels(e['mask'], c),
                            visualize.label_levels(pred, c),
                            visualize.overlay(e['image'], pred, e['mask'])]))
  return out


def _pct(v) -> str:
  return '–' if v is None or math.isnan(v) else f'{100 * v:.2f}'


def _pm(mean, std) -> str:
  return '–' if math.isnan(mean) else f'{100 * mean:.2f} ± {100 * std:.2f}'


def report(result: dict, names: list[str], title: str, checkpoint: str,
           grid_captions=()) -> str:
  """Markdown: the literature's table (Se, Sp, Acc, AUC, F1 in %) for both protocols."""
  cols = ('se', 'sp', 'acc', 'auc_roc', 'f1')
  lines = [f'# DS2F evaluation: {title}', '',
           f'{result["num_images"]} images at their original resolution; checkpoint '
           f'`{checkpoint}`. All values in %.', '']
  classes = [None] if len(names) == 2 else [None, *names[1:]]
  for cls in classes:
    s = f'/{cls}' if cls else ''
    heading = 'Mean over foreground classes' if cls is None and len(names) > 2 else cls
    if heading:
      lines += [f'## {heading}', '']
    lines += ['| Protocol | Se | Sp | Acc | AUC | F1 | IoU | MCC |',
              '|---|---|---|---|---|---|---|---|']
    g = lambda k: result.get(f'fov/{k}{s}', math.nan)
    lines.append('| FOV, global | ' + ' | '.join(_pct(g(k)) for k in cols) +
                 f' | {_pct(g("iou"))} | {_pct(g("mcc"))} |')
    m = lambda k: _pm(result.get(f'fov/{k}_per_image_mean{s}', math.nan),
                      result.get(f'fov/{k}_per_image_std{s}', math.nan))
    lines.append('| FOV, per image (mean ± std) | ' + ' | '.join(m(k) for k in cols) +
                 f' | {m("iou")} | {m("mcc")} |')
    o = lambda k: result.get(f'official/{k}{s}', math.nan)
    lines.append(f'| Official (whole image, global) | {_pct(o("se"))} | {_pct(o("sp"))} | '
                 f'{_pct(o("acc"))} | – | {_pct(o("dice"))} | {_pct(o("iou"))} | '
                 f'{_pct(o("mcc"))} |')
    lines += ['', f'PR-AUC (FOV, global): {_pct(g("auc_pr"))}; average precision: '
              f'{_pct(g("ap"))}.', '']
  lines += ['Se = TP/(TP+FN), Sp = TN/(TN+FP), Acc = (TP+TN)/all, F1 = Dice = 2TP/(2TP+FP+FN); '
            'AUC = ROC-AUC of the foreground probability. "Official" is the protocol of the '
            'official evaluation script (one confusion matrix over every pixel, no FOV mask).',
            '']
  if 'sr/psnr' in result:
    lines += [f'SR stream against the HR image: PSNR {result["sr/psnr"]:.2f} dB, SSIM '
              f'{result["sr/ssim"]:.4f} (mean over images, on [0, 1]).', '']
  if grid_captions:
    lines += ['## Best and worst images by FOV F1', '', '![best and worst](best_worst.png)', '']
    lines += ['Columns: image, ground truth, prediction, errors (TP green, FP red, FN blue).',
              '']
    lines += [f'- {c}' for c in grid_captions]
    lines.append('')
  return '\n'.join(lines)
