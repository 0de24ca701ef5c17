"""Images/s of the training input pipeline alone (read, augment, resize, batch).

  python benchmarks/input_throughput.py --config configs/synthetic.py \
      --set data.data_dir=/tmp/tfds --batches 30

At a real dataset's native size, on synthetic images of that size (built once
under data_dir), with the dataset's own config (HR size, r, batch):

  python benchmarks/input_throughput.py --config configs/chase_db1.py \
      --image-size 960,999 --set data.data_dir=/tmp/tfds_bench --batches 200 --warmup 4

Iterates `input_pipeline.train_iterator` exactly as the train loop does (same
threads, prefetch, augmentation, decoded-image cache) and times the batches
after a warm-up; the first batch (builder preparation, thread start) is
reported apart. Training reads each image hundreds of times, so the figure
that matters is the steady state once the cache holds the split (warm up for
an epoch: --warmup >= images / batch); --set data.cache_mb=0 times the
decode-every-read path of datasets larger than the cache. The pipeline
is not the bottleneck when its images/s exceeds the train step's. CPU seconds
per image (all threads) do not depend on other load on a shared machine: they
give the cores a target rate needs. Prints one
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

from ds2f_jax import augment, input_pipeline  # pylint: disable=g-import-not-at-top


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


def use_synthetic(config, size: tuple[int, int], count: int) -> None:
  """Points config.data at synthetic_fundus images of (height, width) `size`."""
  height, width = size
  config.data.name = 'synthetic_fundus'
  config.data.config = ''
  config.data.train_split, config.data.eval_split = 'train', 'validation'
  # The builder's config class, from the default builder (registers it too).
  config_class = type(input_pipeline.get_builder(config.data).builder_config)
  with config.data.ignore_type():  # tfds.builder takes a config object too.
    config.data.config = config_class(
        name=f'bench_{height}x{width}_{count}', height=height, width=width,
        num_train=count, num_validation=1, num_test=1,
        description='input_throughput.py: native-size synthetic images.')


def run(args) -> dict:
  config = load_config(args.config)
  for item in args.set:
    apply_override(config, item)
  if args.batch_size:
    config.batch_size = args.batch_size
  if args.num_workers is not None:
    config.data.num_workers = args.num_workers
  if args.image_size:
    use_synthetic(config, args.image_size, args.images)

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
  cpu_start = time.process_time()
  t_start = time.perf_counter()
  for _ in range(args.batches):
    t0 = time.perf_counter()
    batch = next(it)
    times.append(time.perf_counter() - t0)
  total_s = time.perf_counter() - t_start
  cpu_s = time.process_time() - cpu_start  # All threads: independent of other load.
  b = config.batch_size
  shapes = {k: list(v.shape) for k, v in batch.items()}
  return {
      'config': args.config, 'overrides': args.set, 'dataset': config.data.name,
      'batch_size': b, 'hr_size': list(config.data.hr_size), 'upscale': config.model.upscale,
      'image_size': list(args.image_size or ()), 'augment_backend': augment.backend(),
      'augment': bool(config.data.augment),
      'num_workers': input_pipeline.num_workers(config),
      'prefetch': int(config.data.prefetch), 'cache_mb': config.data.cache_mb,
      'batches': args.batches, 'warmup': args.warmup,
      'prepare_s': prepare_s, 'first_batch_s': first_s,
      'images_per_s': args.batches * b / total_s,
      'cpu_s_per_image': cpu_s / (args.batches * b),
      'load_1min': os.getloadavg()[0],
      'median_batch_s': statistics.median(times), 'max_batch_s': max(times),
      'shapes': shapes, 'cpu_count': os.cpu_count(),
  }


def _size(text: str) -> tuple[int, int]:
  try:
    height, width = (int(v) for v in text.split(','))
  except ValueError:
    raise argparse.ArgumentTypeError(f'{text!r} is not H,W') from None
  if height <= 0 or width <= 0:
    raise argparse.ArgumentTypeError(f'{text!r}: sizes must be positive')
  return height, width


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--config', default=os.path.join(ROOT, 'configs', 'synthetic.py'),
                 help='configs/X.py[:arg]')
  p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                 help='config override, e.g. data.data_dir=/tmp/tfds (repeatable)')
  p.add_argument('--batch-size', type=int, default=0, help='0 = the config\'s batch_size')
  p.add_argument('--num-workers', type=int, default=None, help='data.num_workers override')
  p.add_argument('--image-size', type=_size, default=None, metavar='H,W',
                 help='synthetic images of this native size instead of the config\'s dataset')
  p.add_argument('--images', type=int, default=8,
                 help='with --image-size: how many training images to generate')
  p.add_argument('--backend', choices=augment.BACKENDS, default=None,
                 help='augmentation backend (default: opencv when importable)')
  p.add_argument('--batches', type=int, default=20, help='timed batches')
  p.add_argument('--warmup', type=int, default=2)
  args = p.parse_args(argv)
  if args.batches < 1 or args.warmup < 0 or args.batch_size < 0:
    p.error('--batches must be >= 1, --warmup and --batch-size >= 0')
  return args


def main(argv=None):
  args = parse_args(argv)
  if args.backend:
    augment.set_backend(args.backend)
  try:
    r = run(args)
  except (ValueError, FileNotFoundError) as e:
    print(f'error: {e.args[0] if e.args else e}', file=sys.stderr)
    return 2
  print(f'{r["dataset"]} {r["image_size"] or ""} batch {r["batch_size"]} HR {r["hr_size"]} '
        f'r={r["upscale"]} augment={r["augment"]} ({r["augment_backend"]}) '
        f'workers={r["num_workers"]} cache_mb={r["cache_mb"]}: prepare {r["prepare_s"]:.1f} s, '
        f'first batch {r["first_batch_s"]:.2f} s')
  print(f'  {r["images_per_s"]:.1f} images/s over {r["batches"]} batches '
        f'(median {r["median_batch_s"] * 1e3:.1f} ms, max {r["max_batch_s"] * 1e3:.1f} ms '
        f'per batch)')
  print(f'  {r["cpu_s_per_image"] * 1e3:.1f} ms of CPU per image (all threads): '
        f'{50 * r["cpu_s_per_image"]:.1f} cores for 50 images/s; 1-min load {r["load_1min"]:.2f}')
  print('RESULT ' + json.dumps(r), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
