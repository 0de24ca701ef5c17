"""Images/s of the training input pipeline alone (read, augment, resize, batch).

  python benchmarks/input_throughput.py --config configs/synthetic.py \
      --set data.data_dir=/tmp/tfds --batches 30

Iterates `input_pipeline.train_iterator` exactly as the train loop does (same
threads, prefetch, augmentation) and times the batches after a warm-up; the
first batch (builder preparation, thread start) is reported apart. The pipeline
is not the bottleneck when its images/s exceeds the train step's. Prints one
`RESULT {json}` line at the end.
"""

import argparse
import ast
import importlib.util
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from ds2f_jax import input_pipeline  # pylint: disable=g-import-not-at-top


def load_config(spec: str):
  """'configs/x.py' or 'configs/x.py:arg' -> get_config([arg])."""
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'--config {path}: no such file')
  module_spec = importlib.util.spec_from_file_location('_bench_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def apply_override(config, item: str) -> None:
  """'data.hr_size=(512, 512)' -> config.data.hr_size = (512, 512); unknown keys are errors."""
  key, sep, text = item.partition('=')
  if not sep:
    raise ValueError(f'--set {item!r} must be KEY=VALUE')
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text  # A bare string such as a path.
  *parents, leaf = key.split('.')
  node = config
  for part in parents:
    if part not in node:
      raise ValueError(f'--set {key}: {part!r} is not a config key')
    node = node[part]
  if leaf not in node:
    raise ValueError(f'--set {key}: {leaf!r} is not a config key')
  node[leaf] = value


def run(args) -> dict:
  config = load_config(args.config)
  for item in args.set:
    apply_override(config, item)
  if args.batch_size:
    config.batch_size = args.batch_size
  if args.num_workers is not None:
    config.data.num_workers = args.num_workers

  t0 = time.perf_counter()
  input_pipeline.prepare(config.data)
  prepare_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  it = input_pipeline.train_iterator(config, 0)
  batch = next(it)
  first_s = time.perf_counter() - t0
  for _ in range(args.warmup):
    batch = next(it)
  times = []
  t_start = time.perf_counter()
  for _ in range(args.batches):
    t0 = time.perf_counter()
    batch = next(it)
    times.append(time.perf_counter() - t0)
  total_s = time.perf_counter() - t_start
  b = config.batch_size
  shapes = {k: list(v.shape) for k, v in batch.items()}
  return {
      'config': args.config, 'overrides': args.set, 'dataset': config.data.name,
      'batch_size': b, 'hr_size': list(config.data.hr_size), 'upscale': config.model.upscale,
      'augment': bool(config.data.augment), 'num_workers': int(config.data.num_workers),
      'prefetch': int(config.data.prefetch), 'batches': args.batches, 'warmup': args.warmup,
      'prepare_s': prepare_s, 'first_batch_s': first_s,
      'images_per_s': args.batches * b / total_s,
      'median_batch_s': statistics.median(times), 'max_batch_s': max(times),
      'shapes': shapes, 'cpu_count': os.cpu_count(),
  }


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--config', default=os.path.join(ROOT, 'configs', 'synthetic.py'),
                 help='configs/X.py[:arg]')
  p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                 help='config override, e.g. data.data_dir=/tmp/tfds (repeatable)')
  p.add_argument('--batch-size', type=int, default=0, help='0 = the config\'s batch_size')
  p.add_argument('--num-workers', type=int, default=None, help='data.num_workers override')
  p.add_argument('--batches', type=int, default=20, help='timed batches')
  p.add_argument('--warmup', type=int, default=2)
  args = p.parse_args(argv)
  if args.batches < 1 or args.warmup < 0 or args.batch_size < 0:
    p.error('--batches must be >= 1, --warmup and --batch-size >= 0')
  return args


def main(argv=None):
  args = parse_args(argv)
  try:
    r = run(args)
  except (ValueError, FileNotFoundError) as e:
    print(f'error: {e.args[0] if e.args else e}', file=sys.stderr)
    return 2
  print(f'{r["dataset"]} batch {r["batch_size"]} HR {r["hr_size"]} r={r["upscale"]} '
        f'augment={r["augment"]} workers={r["num_workers"]}: prepare {r["prepare_s"]:.1f} s, '
        f'first batch {r["first_batch_s"]:.2f} s')
  print(f'  {r["images_per_s"]:.1f} images/s over {r["batches"]} batches '
        f'(median {r["median_batch_s"] * 1e3:.1f} ms, max {r["max_batch_s"] * 1e3:.1f} ms '
        f'per batch)')
  print('RESULT ' + json.dumps(r), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
