r"""Trains the authors' DS2F-UNet (PyTorch) on our pipeline's very batches; scores it with ours.

  python benchmarks/official_train.py --config configs/chase_db1.py:cpu --workdir W \
      --config.data.manual_dir=DIR [--config.seed=1] [--reference PATH] [--no_eval]

The side-by-side of issue 13: same data, same crops, augmentation and order,
same steps and schedule, same evaluator; only the implementation differs.

- Model: the official `Unet` built as its training script builds DS2F
  (super_reso, sr_seg_fusion, before=True, sr_layer=5) with base_ch =
  config.model.width, in float32; torch seeded with config.seed.
- Losses: the official ones with the config's weights: CrossEntropy(out, mask)
  + MSE(sr, hr) + SSIMLoss(fusion_sr, hr; data_range = loss.ssim_data_range,
  pytorch-msssim inside) + RMILoss(fusion_seg, mask; rmi_pool_way=1).
- Optimiser: torch SGD, Nesterov, momentum and coupled weight decay from
  config.optim. Schedule: ours (`train.lr_schedule`), not the official
  PolyLRScheduler: lr = peak * (1 - k / K) ** 0.9 over the K = num_train_steps
  real updates (after config.optim.warmup_steps of linear warm-up from 0, the
  poly part spans K - warmup), reaching 0 after the last one. The official
  scheduler decays over epochs * ceil(images / batch) iterations counted from
  the dataset size; counting the real steps is the one schedule both runs share.
- Batches: `input_pipeline.train_iterator(config, 0)`, i.e. exactly the batches
  `main.py --config <same>` trains on, NHWC -> NCHW.
- Validation every eval_every_steps on data.eval_split (our eval batches, the
  HR argmax, one confusion matrix, `confusion.summarize_confusion`): rows
  `val/...` in metrics.jsonl, as ours; the best val/dice state is kept.

Writes W/config.json, W/metrics.jsonl (our schema: step, loss, ce, mse, ssim,
rmi, lr, grad_norm, images_per_s; val/* at evaluations), W/official_best.pth
and W/official_last.pth (`{'model': state_dict, 'step': ..., 'val': ...}`, the
official checkpoint format) and W/official_run.json (wall times, speed).

Then, unless --no_eval, it scores the checkpoint that config.eval.checkpoint
names (best | latest) with OUR evaluator: `main.py --mode import --input
W/official_<best|last>.pth --workdir W/imported` converts it into our
checkpoint format, `main.py --mode eval` evaluates W/imported on
config.eval.split (both protocols, same resizes), and W/imported/eval/<split>
is copied to W/eval/<split>, the place our own runs keep it
(ds2f_jax/import_official.py checks every key and shape on the way).

Needs torch and pytorch-msssim (CPU builds suffice) and the official code at
--reference (default: <repo>/../shared/reference/imed_vision).
"""

import collections
import collections.abc
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from absl import app, flags  # pylint: disable=g-import-not-at-top
from ml_collections import config_flags
import numpy as np

DEFAULT_REFERENCE = os.path.join(ROOT, '..', 'shared', 'reference', 'imed_vision')

FLAGS = flags.FLAGS


def define_flags():
  """The command's flags; defined only when it runs, so importing it (tests) adds none."""
  config_flags.DEFINE_config_file('config', None,
                                  'A configs/*.py file (plus --config.key=value).',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'Where the run writes (created).')
  flags.DEFINE_string('reference', DEFAULT_REFERENCE,
                      'The official imed_vision checkout (the folder holding imed_vision/).')
  flags.DEFINE_bool('no_eval', False, 'Train only: skip the import into our format and our eval.')
  flags.mark_flag_as_required('config')

LOSS_PARTS = ('ce', 'mse', 'ssim', 'rmi')


class HarnessError(Exception):
  """Bad input or a missing dependency: printed as one `error:` line, exit 2."""


def check_config(config) -> None:
  """The official DS2F-UNet recipe this harness can mirror; anything else is refused."""
  wanted = {'model.name': (config.model.name, 'ds2f_unet'),
            'model.variant': (config.model.variant, 'ds2f'),
            'optim.name': (config.optim.name, 'sgd'),
            'dtype': (config.dtype, 'float32'),
            'grad_accum_steps': (config.grad_accum_steps, 1)}
  for key, (got, want) in wanted.items():
    if got != want:
      raise HarnessError(f'--config.{key}={got!r}: the official harness trains only '
                         f'{key}={want!r}')


def lr_factors(config, steps: int) -> np.ndarray:
  """lr / peak lr of updates 0 .. steps-1: our schedule (train.lr_schedule), as NumPy."""
  o = config.optim
  total = max(int(config.num_train_steps) // int(config.grad_accum_steps), 1)
  warmup = min(int(o.warmup_steps), total - 1)
  warmup = max(warmup, 0)
  k = np.arange(steps, dtype=np.float64)
  poly = (1.0 - np.clip(k - warmup, 0, total - warmup) / (total - warmup)) ** float(o.poly_power)
  return np.where(k < warmup, k / max(warmup, 1), poly)


def load_official(reference: str):
  """(torch, imed_vision) from the checkout at `reference`, or a HarnessError naming it."""
  package = os.path.join(reference, 'imed_vision')
  if not os.path.isdir(package):
    raise HarnessError(f'--reference={reference}: no official imed_vision checkout there '
                       '(expected the folder that holds imed_vision/)')
  try:
    import torch  # pylint: disable=g-import-not-at-top,import-outside-toplevel
    import pytorch_msssim  # noqa: F401  (checked here, used by the official losses)
  except ImportError as e:
    raise HarnessError(f'{e.name} is not installed (pip install torch==2.13.0 '
                       'pytorch-msssim)') from None
  collections.Iterable = collections.abc.Iterable  # Still used by the official package.
  reference = os.path.abspath(reference)
  if reference not in sys.path:
    sys.path.insert(0, reference)
  import imed_vision  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  return torch, imed_vision


def build(config, torch):
  """The official model, losses and optimiser for `config`."""
  from imed_vision.loss import RMILoss, SSIMLoss  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  from imed_vision.models.segmentation.unet import Unet  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  torch.manual_seed(int(config.seed))
  model = Unet(int(config.model.in_channels), int(config.model.num_classes), super_reso=True,
               upscale_rate=int(config.model.upscale), sr_seg_fusion=True, sr_layer=5,
               before=True, base_ch=int(config.model.width))
  losses = {'ce': torch.nn.CrossEntropyLoss(), 'mse': torch.nn.MSELoss(),
            'ssim': SSIMLoss(data_range=float(config.loss.ssim_data_range)),
            'rmi': RMILoss(num_classes=int(config.model.num_classes), rmi_pool_way=1)}
  o = config.optim
  optimizer = torch.optim.SGD(model.parameters(), lr=float(o.learning_rate),
                              momentum=float(o.momentum), nesterov=True,
                              weight_decay=float(o.weight_decay))
  return model, losses, optimizer


def to_torch(torch, batch: dict) -> dict:
  """Our NHWC float images -> NCHW; masks -> long."""
  out = {k: torch.from_numpy(np.ascontiguousarray(np.transpose(batch[k], (0, 3, 1, 2))))
         for k in ('lr', 'hr')}
  out['mask'] = torch.from_numpy(np.asarray(batch['mask'], np.int64))
  return out


def loss_parts(outputs, batch: dict, losses: dict) -> dict:
  """The four official terms, each on the output the official script gives it."""
  out, sr, fusion_seg, fusion_sr = outputs
  return {'ce': losses['ce'](out, batch['mask']), 'mse': losses['mse'](sr, batch['hr']),
          'ssim': losses['ssim'](fusion_sr, batch['hr']),
          'rmi': losses['rmi'](fusion_seg, batch['mask'])}


def validate(config, model, torch) -> dict:
  """val/* of data.eval_split: our eval batches, HR argmax, one confusion matrix."""
  from ds2f_jax import confusion, input_pipeline  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  c = int(config.model.num_classes)
  cm = np.zeros((c, c), np.int64)
  batch_size = int(config.eval.batch_size or config.batch_size)
  model.eval()
  with torch.no_grad():
    for batch in input_pipeline.eval_batches(config, config.data.eval_split, batch_size):
      lr = torch.from_numpy(np.ascontiguousarray(np.transpose(batch['lr'], (0, 3, 1, 2))))
      logits = model(lr)
      logits = logits[0] if isinstance(logits, (tuple, list)) else logits
      preds = logits.argmax(1).numpy()
      for j in np.flatnonzero(np.asarray(batch['valid']) > 0):
        cm += np.bincount(np.asarray(batch['mask'][j], np.int64).ravel() * c
                          + preds[j].ravel(), minlength=c * c).reshape(c, c)
  model.train()
  return {f'val/{k}': v for k, v in confusion.summarize_confusion(cm).items()}


def _write_row(f, step: int, row: dict) -> None:
  f.write(json.dumps({'step': int(step), **{k: float(v) for k, v in row.items()}}) + '\n')
  f.flush()


def train(config, workdir: str, torch) -> dict:
  """Trains for config.num_train_steps; returns the run record (also W/official_run.json)."""
  from ds2f_jax import input_pipeline  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  model, losses, optimizer = build(config, torch)
  total = int(config.num_train_steps)
  peak = float(config.optim.learning_rate)
  factors = lr_factors(config, total)
  weights = {k: float(config.loss[f'{k}_weight']) for k in LOSS_PARTS}
  batches = input_pipeline.train_iterator(config, 0)
  model.train()

  t0 = time.time()
  eval_s, best, speeds, interval = 0.0, None, [], []
  t_log, s_log = None, 0
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w', encoding='utf-8') as log:
    for step in range(total):
      for group in optimizer.param_groups:
        group['lr'] = peak * float(factors[step])
      batch = to_torch(torch, next(batches))
      parts = loss_parts(model(batch['lr']), batch, losses)
      loss = sum(weights[k] * parts[k] for k in LOSS_PARTS)
      optimizer.zero_grad(set_to_none=True)
      loss.backward()
      grad_norm = torch.sqrt(sum((p.grad.detach() ** 2).sum() for p in model.parameters()
                                 if p.grad is not None))
      optimizer.step()
      values = {'loss': loss.item(), **{k: v.item() for k, v in parts.items()},
                'lr': peak * float(factors[step]), 'grad_norm': grad_norm.item()}
      if not all(np.isfinite(v) for v in values.values()):
        raise HarnessError(f'non-finite loss or gradient at step {step + 1}: {values}')
      interval.append(values)
      done = step + 1
      if t_log is None:  # As ours: throughput is timed from the end of the first step.
        t_log, s_log = time.time(), done
      if done % config.log_every_steps == 0 or done == total:
        row = {k: float(np.mean([v[k] for v in interval])) for k in interval[0]}
        interval = []
        now = time.time()
        if done > s_log:
          row['images_per_s'] = (done - s_log) * config.batch_size / max(now - t_log, 1e-9)
          speeds.append(row['images_per_s'])
        t_log, s_log = now, done
        _write_row(log, done, row)
      if done % config.eval_every_steps == 0 or done == total:
        t_eval = time.time()
        val = validate(config, model, torch)
        _write_row(log, done, val)
        state = {'model': model.state_dict(), 'step': done, 'val': val}
        if best is None or val['val/dice'] > best:
          best = val['val/dice']
          torch.save(state, os.path.join(workdir, 'official_best.pth'))
        eval_s += time.time() - t_eval
        t_log += time.time() - t_eval  # Validation time is not training throughput.
        print(f'step {done}/{total}: loss {values["loss"]:.4f} val/dice {val["val/dice"]:.4f}',
              flush=True)
  torch.save(state, os.path.join(workdir, 'official_last.pth'))
  wall = time.time() - t0
  record = {'seed': int(config.seed), 'steps': total, 'batch_size': int(config.batch_size),
            'wall_s': wall, 'train_s': wall - eval_s, 'validation_s': eval_s,
            'images_per_s': statistics.median(speeds) if speeds else float('nan'),
            'best_val_dice': best, 'torch': torch.__version__,
            'torch_threads': torch.get_num_threads()}
  with open(os.path.join(workdir, 'official_run.json'), 'w', encoding='utf-8') as f:
    json.dump(record, f, indent=2)
  return record


def config_args(argv) -> list[str]:
  """The --config and --config.key=value arguments of `argv`, for main.py."""
  out, i = [], 0
  while i < len(argv):
    a = argv[i]
    if a == '--config' or (a.startswith('--config.') and '=' not in a):
      out += argv[i:i + 2]
      i += 2
      continue
    if a.startswith('--config=') or a.startswith('--config.'):
      out.append(a)
    i += 1
  return out


def import_and_evaluate(config, workdir: str, argv) -> dict:
  """Our `--mode import` then `--mode eval` of the official checkpoint; returns metrics.json."""
  which = str(config.eval.checkpoint)
  if which not in ('best', 'latest'):
    raise HarnessError(f'--config.eval.checkpoint={which!r}: the harness keeps best and latest')
  pth = os.path.join(workdir, 'official_best.pth' if which == 'best' else 'official_last.pth')
  imported = os.path.join(workdir, 'imported')
  main = os.path.join(ROOT, 'main.py')
  args = config_args(argv)
  for mode, extra in (('import', ['--input', pth]),
                      ('eval', ['--config.eval.checkpoint=latest'])):
    cmd = [sys.executable, main, '--mode', mode, *args, '--workdir', imported, *extra]
    print('+', ' '.join(cmd), flush=True)
    done = subprocess.run(cmd, check=False)
    if done.returncode:
      raise HarnessError(f'main.py --mode {mode} failed with exit {done.returncode}; '
                         f'the trained checkpoint is {pth}')
  split = str(config.eval.split)
  src = os.path.join(imported, 'eval', split)
  dst = os.path.join(workdir, 'eval', split)
  shutil.copytree(src, dst, dirs_exist_ok=True)
  with open(os.path.join(dst, 'metrics.json'), encoding='utf-8') as f:
    return json.load(f)


def run(config, workdir: str, reference: str, evaluate: bool, argv) -> dict:
  check_config(config)
  torch, _ = load_official(reference)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w', encoding='utf-8') as f:
    json.dump(config.to_dict(), f, indent=2, default=list)
  record = train(config, workdir, torch)
  if evaluate:
    result = import_and_evaluate(config, workdir, argv)
    record['metrics'] = result
    with open(os.path.join(workdir, 'official_run.json'), 'w', encoding='utf-8') as f:
      json.dump(record, f, indent=2)
  return record


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not FLAGS.workdir:
    print('error: --workdir is required', file=sys.stderr)
    sys.exit(2)
  try:
    record = run(FLAGS.config, FLAGS.workdir, FLAGS.reference, not FLAGS.no_eval, sys.argv[1:])
  except (HarnessError, ValueError, FileNotFoundError, KeyError) as e:
    print(f'error: {e.args[0] if e.args else e}', file=sys.stderr)
    sys.exit(2)
  print(json.dumps({k: v for k, v in record.items() if k != 'metrics'}))


if __name__ == '__main__':
  define_flags()
  app.run(main)
