r"""The ablation set in one command: presets x seeds, trained, evaluated, one table.

  python -m ds2f_jax.ablate --config configs/drive.py --workdir W \
      [--variants seg_only,seg_hr,dual_stream,ds2f_after,ds2f] [--seeds 3] \
      [--config.key=value ...]

Each preset of `configs/ablations.py` and each seed (config.seed, +1, ...) is
trained (`train.train_and_evaluate`) and evaluated on `config.eval.split`
(`evaluate.evaluate`, both protocols) in W/<variant>/<seed>/. The
--config.key=value overrides apply to every variant; a preset's own keys win.
Rerunning resumes: a finished run (W/<variant>/<seed>/ablation_run.json) is
skipped, an unfinished one continues from its newest checkpoint, and a run that
was trained with other settings is refused rather than mixed in. After every
run, W/ablation.md (one table, mean ± std over seeds, with per-image cost) and
W/ablation.json (the raw numbers) are rewritten from what is finished.
"""

from __future__ import annotations

import json
import math
import os

import jax
import numpy as np
from absl import flags, logging

from configs import ablations
from ds2f_jax import cli, curves, evaluate, flops, imaging, inference, train

# Settings that say where data is read from and how fast, not what is trained or
# scored: a run may be resumed or reused when only these differ.
_UNSCORED_KEYS = ('data.data_dir', 'data.manual_dir', 'data.num_workers', 'data.prefetch',
                  'data.cache_mb',
                  'eval.batch_size', 'eval.num_images_tb')

# (metrics.json key, column header) of the table, both protocols.
TABLE_METRICS = (('official/dice', 'Dice'), ('official/iou', 'IoU'), ('official/se', 'Se'),
                 ('official/sp', 'Sp'), ('official/acc', 'Acc'), ('fov/f1', 'FOV F1'),
                 ('fov/auc_roc', 'FOV AUC'))

RUN_RECORD = 'ablation_run.json'


def seeds_of(config, count: int) -> list[int]:
  """config.seed, config.seed + 1, ... (`count` of them)."""
  if count < 1:
    raise ValueError(f'--seeds={count} must be >= 1')
  return [int(config.seed) + i for i in range(count)]


def run_config(config, variant: str, seed: int):
  """The config of one run: the preset's overrides on `config`, and the seed."""
  cfg = ablations.apply(config, variant)
  cfg.seed = seed
  return cfg


def run_dir(workdir: str, variant: str, seed: int) -> str:
  return os.path.join(os.path.abspath(workdir), variant, str(seed))


def _flat(tree: dict, prefix: str = '') -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def _check_same_training(config, directory: str) -> None:
  """Refuses to resume or reuse a run that was trained with other settings."""
  path = os.path.join(directory, 'config.json')
  if not os.path.isfile(path):
    return
  with open(path, encoding='utf-8') as f:
    old = _flat(json.load(f))
  new = _flat(inference.plain_config(config))
  for key in sorted(set(old) | set(new)):
    if key in _UNSCORED_KEYS or key.startswith('eval.'):
      continue
    if old.get(key) != new.get(key):
      raise ValueError(f'{directory} was trained with {key}={old.get(key)!r}, this run has '
                       f'{new.get(key)!r}: use another --workdir or delete {directory}')


def _eval_settings(config) -> dict:
  return {k: v for k, v in inference.plain_config(config)['eval'].items()
          if f'eval.{k}' not in _UNSCORED_KEYS}


def _finished(config, directory: str) -> dict | None:
  """The run's record if it was evaluated with the current eval settings."""
  path = os.path.join(directory, RUN_RECORD)
  if not os.path.isfile(path):
    return None
  with open(path, encoding='utf-8') as f:
    record = json.load(f)
  return record if record.get('eval') == _eval_settings(config) else None


def training_speed(directory: str) -> float:
  """Median images/s over the logged training intervals of metrics.jsonl.

  The median, because an interval that spans a validation or a checkpoint is
  slower than training alone; NaN when no interval was timed.
  """
  values = []
  path = os.path.join(directory, 'metrics.jsonl')
  if os.path.isfile(path):
    with open(path, encoding='utf-8') as f:
      for line in f:
        row = json.loads(line)
        if 'images_per_s' in row:
          values.append(float(row['images_per_s']))
  return float(np.median(values)) if values else math.nan


def train_and_score(config, directory: str) -> dict:
  """Trains (or resumes) and evaluates one run; returns and writes its record.

  The record holds the run's metrics.json, its training speed and the
  variant's per-image cost (`variant_cost`), so a rerun recomputes nothing.
  """
  _check_same_training(config, directory)
  record = _finished(config, directory)
  if record is not None:
    logging.info('%s is finished; skipped.', directory)
    return record
  train.train_and_evaluate(config, directory)
  result = evaluate.evaluate(config, directory)
  plain = inference.plain_config(config)
  record = {'model': plain['model'], 'loss': plain['loss'], 'seed': int(config.seed),
            'eval': _eval_settings(config),
            'metrics': {k: (v.item() if hasattr(v, 'item') else v) for k, v in result.items()},
            'images_per_s': training_speed(directory), 'cost': variant_cost(config)}
  if jax.process_index() == 0:
    with open(os.path.join(directory, RUN_RECORD), 'w', encoding='utf-8') as f:
      json.dump(record, f, indent=2)
  return record


def variant_cost(config) -> dict:
  """Per-image FLOPs (FlopCounterMode rules) and parameters of both paths, at the input size."""
  size = inference.lr_size(config)
  costs = flops.model_costs(config.model, size, dtype=config.dtype)
  return {path: {'flops': c.flops, 'params': c.params} for path, c in costs.items()}


def _mean_std(values: list[float]) -> dict:
  v = np.asarray(values, np.float64)
  return {'mean': float(v.mean()), 'std': float(v.std(ddof=1)) if v.size > 1 else None,
          'n': int(v.size)}


def summarize(records: list[dict]) -> dict:
  """Mean and sample std (ddof=1; None for one seed) of every number over seeds."""
  keys = [k for k, v in records[0]['metrics'].items() if isinstance(v, (int, float))]
  out = {k: _mean_std([r['metrics'][k] for r in records]) for k in keys}
  out['images_per_s'] = _mean_std([r['images_per_s'] for r in records])
  return out


def _size(hw) -> str:
  return f'{hw[0]}×{hw[1]}'


def _cell(stat: dict | None, scale: float = 100.0, digits: int = 2) -> str:
  if stat is None or math.isnan(stat['mean']):
    return '–'
  text = f'{scale * stat["mean"]:.{digits}f}'
  if stat['std'] is not None and not math.isnan(stat['std']):
    text += f' ± {scale * stat["std"]:.{digits}f}'
  return text


def _gflop(value: int) -> str:
  return f'{value / 1e9:.4g}'


def render_markdown(result: dict) -> str:
  """W/ablation.md: one row per variant, both protocols and the per-image cost."""
  d = result['data']
  seeds = result['seeds']
  lines = [f'# Ablations: {d["name"]}{"/" + d["config"] if d["config"] else ""}, '
           f'split {result["split"]}', '',
           f'HR {_size(d["hr_size"])}, r = {result["upscale"]}; seeds '
           f'{", ".join(map(str, seeds))}. Metrics in % at the original image size: mean ± '
           'sample std over the finished seeds (the Seeds column; no ± for one seed).', '',
           '| Variant | Input → output | Seeds | Dice | IoU | Se | Sp | Acc | FOV F1 | FOV AUC '
           '| GFLOP inference | GFLOP train fwd | Train images/s | Params inference |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|']
  for name, v in result['variants'].items():
    s = v['summary']
    if not s:
      continue
    metrics_cells = ' | '.join(_cell(s.get(k)) for k, _ in TABLE_METRICS)
    lines.append(
        f'| {name} | {_size(v["input_size"])} → {_size(v["output_size"])} | '
        f'{s["images_per_s"]["n"]} | {metrics_cells} | {_gflop(v["cost"]["inference"]["flops"])} '
        f'| {_gflop(v["cost"]["train"]["flops"])} | {_cell(s["images_per_s"], 1.0, 1)} | '
        f'{v["cost"]["inference"]["params"]:,} |')
  lines += [
      '', 'Dice, IoU, Se, Sp, Acc: the official protocol (one confusion matrix over every pixel '
      'of the split, whole image, no FOV mask). FOV F1, FOV AUC: inside the field-of-view mask, '
      'global; AUC = ROC-AUC of the foreground probability. Outputs smaller than the original '
      '(seg_only at LR) are scored after a nearest resize of the probabilities.', '',
      'GFLOP per image: convolutions and learned matmuls, 2 FLOPs per multiply-accumulate '
      "(PyTorch FlopCounterMode's convention), of the inference path and of the train-mode "
      'forward (every stream and the SFEM; the backward pass adds about twice that). Train '
      'images/s: median over logged training intervals, mean ± std over seeds. Params: the '
      'inference path.', '']
  return '\n'.join(lines)


def _write(workdir: str, result: dict) -> None:
  if jax.process_index() != 0:
    return
  with open(os.path.join(workdir, 'ablation.json'), 'w', encoding='utf-8') as f:
    json.dump(result, f, indent=2)
  with open(os.path.join(workdir, 'ablation.md'), 'w', encoding='utf-8') as f:
    f.write(render_markdown(result))


def run(config, workdir: str, variants=ablations.DEFAULT_VARIANTS, seeds: int = 1) -> dict:
  """Everything `python -m ds2f_jax.ablate` does; returns what ablation.json holds."""
  variants = list(variants)
  if not variants:
    raise ValueError('--variants is empty; name at least one preset')
  for name in variants:
    if variants.count(name) > 1:
      raise ValueError(f'--variants names {name!r} twice')
  seed_list = seeds_of(config, seeds)
  # Every run's settings are checked before the first one trains for hours.
  configs = {}
  for name in variants:
    cfg = run_config(config, name, seed_list[0])
    train.validate_config(cfg)
    configs[name] = cfg
  workdir = os.path.abspath(workdir)
  for name in variants:
    for seed in seed_list:
      _check_same_training(run_config(config, name, seed), run_dir(workdir, name, seed))
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise PermissionError(f'cannot create workdir {workdir}: {e.strerror}') from None
  r = int(config.model.upscale)
  result = {'data': {'name': config.data.name, 'config': config.data.config,
                     'hr_size': list(config.data.hr_size)},
            'upscale': r, 'split': str(config.eval.split), 'seeds': seed_list,
            'config': inference.plain_config(config), 'variants': {}}
  for name, cfg in configs.items():
    in_size, out_size = imaging.io_sizes(cfg.data.hr_size, r, cfg.model.variant)
    result['variants'][name] = {'overrides': ablations.overrides(name),
                                'input_size': list(in_size), 'output_size': list(out_size),
                                'cost': None, 'runs': {}, 'summary': {}}
  total, done = len(variants) * len(seed_list), 0
  for name in variants:
    entry = result['variants'][name]
    for seed in seed_list:
      done += 1
      logging.info('Ablation run %d/%d: %s, seed %d.', done, total, name, seed)
      record = train_and_score(run_config(config, name, seed), run_dir(workdir, name, seed))
      entry['cost'] = entry['cost'] or record['cost']
      entry['runs'][str(seed)] = {'metrics': record['metrics'],
                                  'images_per_s': record['images_per_s']}
      entry['summary'] = summarize(list(entry['runs'].values()))
      _write(workdir, result)
      curves.write_comparison(os.path.join(workdir, 'curves.png'), {
          f'{n} seed {s}': run_dir(workdir, n, s) for n in variants for s in seed_list})
  logging.info('Wrote %s and %s.', os.path.join(workdir, 'ablation.md'),
               os.path.join(workdir, 'ablation.json'))
  return result


# ----------------------------------------------------------------------------
# Command line (flags are defined only when run as a program, so importing this
# module next to main.py defines no flag twice).


def _define_flags():
  cli.define_config_flag('A configs/*.py file (plus --config.key=value, applied to every '
                         'variant).')
  flags.DEFINE_string('workdir', None, 'Runs go to WORKDIR/<variant>/<seed>/, the table to '
                      'WORKDIR/ablation.md.')
  flags.DEFINE_list('variants', list(ablations.DEFAULT_VARIANTS),
                    f'Presets of configs/ablations.py: {", ".join(ablations.PRESETS)}.')
  flags.DEFINE_integer('seeds', 1, 'Seeds per variant: config.seed, config.seed + 1, ...')
  flags.mark_flags_as_required(['config', 'workdir'])


def _run_flags(config, workdir, variants, seeds):
  cli.check_folders(config, {'--workdir': workdir})
  run(config, workdir, variants, seeds)


def main(argv):
  f = flags.FLAGS
  cli.run(argv, _run_flags, f.config, f.workdir, f.variants, f.seeds)


if __name__ == '__main__':
  _define_flags()
  cli.start(main)
