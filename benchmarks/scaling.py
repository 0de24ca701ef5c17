"""Images/s against batch size and LR size: runs train_throughput.py once per point.

  python benchmarks/scaling.py --width 16 --batches 1,2,4,8,16,32 --batch-lr 128 \
      --lr-sizes 128,192,256,384,512 --lr-batch 2 --out /tmp/scaling.jsonl

Each point runs in a fresh process (so each compiles from scratch and frees its
memory) and is appended to --out as the harness's RESULT json plus the
1-minute load average before it started; a markdown table goes to stdout, with
the per-pixel cost of each point relative to the first (1.00 = linear in pixels).
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run_point(args, batch: int, lr: int) -> dict:
  cmd = [sys.executable, os.path.join(HERE, 'train_throughput.py'), '--width', str(args.width),
         '--batch-size', str(batch), '--lr-size', str(lr), '--upscale', str(args.upscale),
         '--dtype', args.dtype, '--mode', args.mode, '--steps', str(args.steps),
         '--warmup', str(args.warmup)]
  load = os.getloadavg()[0]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
  lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
  if proc.returncode or not lines:
    return {'batch_size': batch, 'lr_size': [lr, lr], 'error': proc.stderr.strip()[-300:],
            'load_before': load}
  r = json.loads(lines[0][len('RESULT '):])
  r['load_before'] = load
  return r


def table(rows, title):
  print(f'\n{title}\n')
  print('| batch | LR | HR | median step s | images/s | CPU s/step | us/HR pixel (wall) | '
        'rel. per-pixel cost | compile s | load (1 min) |')
  print('|---|---|---|---|---|---|---|---|---|---|')
  base = None
  for r in rows:
    if 'error' in r:
      print(f'| {r["batch_size"]} | {r["lr_size"][0]} | - | error: {r["error"][:60]} |')
      continue
    pixels = r['batch_size'] * r['hr_size'][0] * r['hr_size'][1]
    per_px = r['median_step_s'] / pixels * 1e6
    base = base or per_px
    print(f'| {r["batch_size"]} | {r["lr_size"][0]} | {r["hr_size"][0]} | '
          f'{r["median_step_s"]:.3f} | {r["images_per_s"]:.2f} | {r["median_step_cpu_s"]:.3f} | '
          f'{per_px:.3f} | {per_px / base:.2f} | {r["compile_s"]:.1f} | '
          f'{r["load_before"]:.2f} |')


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--width', type=int, default=16)
  p.add_argument('--upscale', type=int, default=2)
  p.add_argument('--dtype', default='float32')
  p.add_argument('--mode', default='train')
  p.add_argument('--batches', default='1,2,4,8,16,32')
  p.add_argument('--batch-lr', type=int, default=128, help='LR size of the batch sweep')
  p.add_argument('--lr-sizes', default='128,192,256,384,512')
  p.add_argument('--lr-batch', type=int, default=2, help='batch of the LR-size sweep')
  p.add_argument('--steps', type=int, default=3)
  p.add_argument('--warmup', type=int, default=1)
  p.add_argument('--timeout', type=int, default=1800)
  p.add_argument('--out', default='', help='append every point as json lines here')
  args = p.parse_args(argv)
  sweeps = {
      'batch': [(int(b), args.batch_lr) for b in args.batches.split(',') if b],
      'lr_size': [(args.lr_batch, int(s)) for s in args.lr_sizes.split(',') if s],
  }
  for name, points in sweeps.items():
    rows = []
    for batch, lr in points:
      r = run_point(args, batch, lr)
      r['sweep'] = name
      rows.append(r)
      if args.out:
        with open(args.out, 'a') as f:
          f.write(json.dumps(r) + '\n')
      print(f'{name}: batch {batch} LR {lr}: '
            + (f'{r["images_per_s"]:.2f} images/s' if 'error' not in r else r['error'][-200:]),
            file=sys.stderr, flush=True)
    table(rows, f'{args.mode} {args.dtype} width {args.width}, sweep over {name}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
