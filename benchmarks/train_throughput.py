"""Throughput of the DS2F train step or inference forward on one device.

Runs with jax/flax/optax/orbax/numpy alone (the GPU machine has no
ml_collections, clu, TFDS or grain): the config comes from configs/default.py
through a small dict stand-in when ml_collections is missing, and the batch is
synthetic and stays on the device, so only the step itself is timed.

  python benchmarks/train_throughput.py --batch-size 8 --lr-size 256 --upscale 2 \
      --dtype bfloat16 --mode train --peak-tflops 790

Prints compile time, median step time, images/s, achieved TFLOP/s (and the
fraction of --peak-tflops), peak device memory, then one `RESULT {json}` line.
The step is the project's own (`train.make_train_step`: forward through all
four outputs, the four losses, backward, SGD-Nesterov, donated state); the
inference forward is `model.apply(..., train=False)`, the HR logits.
"""

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np

from ds2f_jax import flops as flops_lib  # pylint: disable=g-import-not-at-top
from ds2f_jax import imaging, sharding, train
from ds2f_jax.models import registry

# The official figure for DS2F-UNet, LR 256^2 -> HR 512^2, width 64: train fwd+bwd per image
# (docs/method.md §Model size and FLOPs).
SPEC_TRAIN_GFLOP_PER_IMAGE = 583.2


class _ConfigDict(dict):
  """Attribute access over a dict: enough of ml_collections.ConfigDict for default.py."""

  def __getattr__(self, key):
    try:
      return self[key]
    except KeyError:
      raise AttributeError(key) from None

  def __setattr__(self, key, value):
    self[key] = value

  def to_dict(self):
    return {k: v.to_dict() if isinstance(v, _ConfigDict) else v for k, v in self.items()}


def default_config(force_stand_in: bool = False):
  """configs/default.py, with a dict stand-in for ml_collections if it is not installed."""
  path = os.path.join(ROOT, 'configs', 'default.py')
  spec = importlib.util.spec_from_file_location('_ds2f_default_config', path)
  module = importlib.util.module_from_spec(spec)
  try:  # The GPU benchmark machine may lack ml_collections: then a stand-in.
    importlib.import_module('ml_collections')
    missing = False
  except ImportError:
    missing = True
  if not (missing or force_stand_in):
    spec.loader.exec_module(module)
    return module.get_config()
  saved = sys.modules.get('ml_collections')
  sys.modules['ml_collections'] = types.SimpleNamespace(ConfigDict=_ConfigDict)
  try:
    spec.loader.exec_module(module)
  finally:
    if saved is None:
      del sys.modules['ml_collections']
    else:
      sys.modules['ml_collections'] = saved
  return module.get_config()


def parse_size(text: str) -> tuple[int, int]:
  """'256' -> (256, 256); '192x256' -> (192, 256)."""
  parts = text.lower().split('x')
  try:
    size = tuple(int(p) for p in parts)
  except ValueError:
    size = ()
  if len(size) == 1:
    size = size * 2
  if len(size) != 2 or min(size) < 1:
    raise argparse.ArgumentTypeError(f'--lr-size={text!r} must be N or HxW (positive ints)')
  return size


def build_config(args):
  """The default config with the benchmark's model, size, batch and dtype."""
  config = default_config()
  config.model.name = args.model
  config.model.width = args.width
  config.model.upscale = args.upscale
  config.model.variant = args.variant
  h, w = args.lr_size
  config.data.hr_size = (h * args.upscale, w * args.upscale)
  config.batch_size = args.batch_size
  config.dtype = args.dtype
  config.remat = args.remat
  config.num_train_steps = max(1_000, args.warmup + args.steps + 1)  # Poly decay stays > 0.
  train.validate_config(config)
  if hasattr(registry, 'check_batch_size') and args.mode == 'train':
    registry.check_batch_size(config.model, args.batch_size)
  return config


def synthetic_batch(config, batch_size: int, seed: int = 0) -> dict:
  """A batch shaped like the input pipeline's for the config's variant: LR/HR in
  [-1, 1], ~12 % vessel pixels. seg_only / seg_hr get one image at their own size
  ('lr' is 'hr'), as input_pipeline.make_example gives them."""
  rng = np.random.default_rng(seed)
  (ih, iw), (oh, ow) = imaging.io_sizes(config.data.hr_size, config.model.upscale,
                                        config.model.variant)
  hr = rng.uniform(-1, 1, (batch_size, oh, ow, 3)).astype(np.float32)
  if (ih, iw) == (oh, ow):
    lr = hr
  else:
    lr = hr.reshape(batch_size, ih, oh // ih, iw, ow // iw, 3).mean(axis=(2, 4))
  mask = (rng.uniform(size=(batch_size, oh, ow)) < 0.12).astype(np.int32)
  return {'lr': lr, 'hr': hr, 'mask': mask}


def _cost_flops(compiled) -> float | None:
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(cost, (list, tuple)):  # Older jax: one dict per program.
    cost = cost[0] if cost else None
  return float(cost['flops']) if cost and 'flops' in cost else None


def _compiled_bytes(compiled) -> int | None:
  """Arguments + outputs + temporaries - donated aliases, from XLA's memory analysis."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if m is None:
    return None
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
             - m.alias_size_in_bytes)


def _peak_device_bytes(device) -> int | None:
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except
    return None
  return int(stats['peak_bytes_in_use']) if stats and 'peak_bytes_in_use' in stats else None


def _host_peak_rss_bytes() -> int | None:
  try:
    import resource  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB.


def build(args, config, mesh):
  """(jitted fn, initial carry, batch) of the mode: the train step or the inference forward."""
  model = train.create_model(config)
  batch = synthetic_batch(config, args.batch_size)
  if args.mode == 'train':
    tx = train.create_optimizer(config)
    state = train.init_state(config, model, tx, mesh)
    step = train.make_train_step(config, model, tx, mesh)
    return step, state, sharding.put_batch(batch, mesh)

  h, w = imaging.input_size(config)
  x = jnp.zeros((1, h, w, config.model.in_channels), jnp.float32)
  rep = sharding.replicated(mesh)
  init = jax.jit(lambda key: model.init(key, x, train=False), out_shardings=rep)
  variables = init(jax.random.key(config.seed, impl='rbg'))
  infer = jax.jit(lambda v, lr: model.apply(v, lr, train=False),
                  in_shardings=(rep, sharding.data_sharded(mesh)), out_shardings=rep)
  return infer, variables, sharding.put_batch({'lr': batch['lr']}, mesh)['lr']


def compile_program(args):
  """(compiled, carry, batch, config): the program at `args`, compiled for one device."""
  config = build_config(args)
  mesh = sharding.create_mesh(jax.devices()[:1])
  fn, carry, batch = build(args, config, mesh)
  return fn.lower(carry, batch).compile(), carry, batch, config


def run(args) -> dict:
  config = build_config(args)
  device = jax.devices()[0]
  mesh = sharding.create_mesh([device])

  t0 = time.perf_counter()
  fn, carry, batch = build(args, config, mesh)
  jax.block_until_ready(carry)
  init_s = time.perf_counter() - t0

  t0 = time.perf_counter()
  lowered = fn.lower(carry, batch)
  lower_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0

  model_flops = float(flops_lib.conv_matmul_flops(fn, carry, batch))
  xla_flops = _cost_flops(compiled)

  train_mode = args.mode == 'train'

  def call(c):
    out = compiled(c, batch)
    return out if train_mode else (c, out)

  for _ in range(args.warmup):
    carry, out = call(carry)
  jax.block_until_ready((carry, out) if args.warmup else carry)

  times, cpu_times = [], []
  for _ in range(args.steps):
    t0, c0 = time.perf_counter(), time.process_time()
    carry, out = call(carry)
    jax.block_until_ready((carry, out))
    times.append(time.perf_counter() - t0)
    cpu_times.append(time.process_time() - c0)
  if train_mode and not np.isfinite(float(out['loss'])):
    raise FloatingPointError(f'loss is {float(out["loss"])} after {args.warmup + args.steps} steps')

  # Back-to-back dispatch (how the train loop runs), one sync at the end.
  pipelined_s = None
  if args.steps > 1:
    t0 = time.perf_counter()
    for _ in range(args.steps):
      carry, out = call(carry)
    jax.block_until_ready((carry, out))
    pipelined_s = (time.perf_counter() - t0) / args.steps

  if args.profile_dir:
    with jax.profiler.trace(args.profile_dir):
      for _ in range(3):
        carry, out = call(carry)
      jax.block_until_ready((carry, out))

  median_s = statistics.median(times)
  flops = model_flops
  tflops = flops / median_s / 1e12 if flops else None
  b = args.batch_size
  result = {
      'model': args.model, 'variant': args.variant, 'mode': args.mode, 'dtype': args.dtype,
      'batch_size': b, 'lr_size': list(args.lr_size), 'upscale': args.upscale,
      'hr_size': list(config.data.hr_size), 'width': args.width, 'remat': args.remat,
      'steps': args.steps, 'warmup': args.warmup,
      'init_s': round(init_s, 3), 'lower_s': round(lower_s, 3), 'compile_s': round(compile_s, 3),
      'median_step_s': median_s, 'min_step_s': min(times), 'max_step_s': max(times),
      'images_per_s': b / median_s,
      # CPU seconds this process used per step (all threads): on a shared host, less
      # sensitive to other load than wall time.
      'median_step_cpu_s': statistics.median(cpu_times),
      'pipelined_step_s': pipelined_s,
      'pipelined_images_per_s': b / pipelined_s if pipelined_s else None,
      'flops_per_step': flops,
      'flops_source': 'FlopCounterMode convention (ds2f_jax.flops)',
      'model_gflops_per_image': model_flops / b / 1e9 if model_flops else None,
      'xla_gflops_per_image': xla_flops / b / 1e9 if xla_flops else None,
      'achieved_tflops': tflops,
      'peak_tflops': args.peak_tflops,
      'fraction_of_peak': tflops / args.peak_tflops if tflops and args.peak_tflops else None,
      'peak_device_bytes': _peak_device_bytes(device),
      'compiled_bytes': _compiled_bytes(compiled),
      'host_peak_rss_bytes': _host_peak_rss_bytes(),
      'device': device.device_kind, 'platform': device.platform,
      'load_avg_1min': os.getloadavg()[0] if hasattr(os, 'getloadavg') else None,
      'cpu_count': os.cpu_count(),
      'jax': jax.__version__, 'python': platform.python_version(),
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
  }
  if train_mode:
    result['final_loss'] = float(out['loss'])
  return result


def _fmt_bytes(n):
  return 'n/a' if n is None else f'{n / 2**30:.2f} GiB'


def report(r: dict) -> None:
  print(f'{r["model"]}/{r["variant"]} {r["mode"]} {r["dtype"]} batch {r["batch_size"]} '
        f'LR {r["lr_size"][0]}x{r["lr_size"][1]} -> HR {r["hr_size"][0]}x{r["hr_size"][1]} '
        f'width {r["width"]} on {r["device"]} ({r["platform"]}), jax {r["jax"]}')
  print(f'  init {r["init_s"]:.2f} s, lower {r["lower_s"]:.2f} s, compile {r["compile_s"]:.2f} s')
  print(f'  step median {r["median_step_s"] * 1e3:.2f} ms (min {r["min_step_s"] * 1e3:.2f}, '
        f'max {r["max_step_s"] * 1e3:.2f}) over {r["steps"]} after {r["warmup"]} warm-up: '
        f'{r["images_per_s"]:.2f} images/s; process CPU time {r["median_step_cpu_s"]:.3f} s/step')
  if r['pipelined_images_per_s']:
    print(f'  back-to-back: {r["pipelined_step_s"] * 1e3:.2f} ms/step, '
          f'{r["pipelined_images_per_s"]:.2f} images/s')
  if r['achieved_tflops'] is not None:
    frac = (f', {100 * r["fraction_of_peak"]:.1f} % of {r["peak_tflops"]} TFLOP/s'
            if r['fraction_of_peak'] is not None else '')
    print(f'  {r["flops_per_step"] / 1e9:.1f} GFLOP/step ({r["flops_source"]}): '
          f'{r["achieved_tflops"]:.3f} TFLOP/s{frac}')
  print(f'  memory: device peak {_fmt_bytes(r["peak_device_bytes"])}, compiled program '
        f'{_fmt_bytes(r["compiled_bytes"])}, host RSS peak {_fmt_bytes(r["host_peak_rss_bytes"])}')


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--model', default='ds2f_unet', help='ds2f_unet | ds2f_deeplabv3plus')
  p.add_argument('--variant', default='ds2f', help='model.variant (ds2f, seg_only, ...)')
  p.add_argument('--batch-size', type=int, default=8)
  p.add_argument('--lr-size', type=parse_size, default=(256, 256), help='N or HxW')
  p.add_argument('--upscale', type=int, default=2)
  p.add_argument('--dtype', choices=('float32', 'bfloat16'), default='bfloat16')
  p.add_argument('--mode', choices=('train', 'infer'), default='train')
  p.add_argument('--steps', type=int, default=20, help='timed steps (median reported)')
  p.add_argument('--warmup', type=int, default=5)
  p.add_argument('--peak-tflops', type=float, default=None,
                 help='peak of the device at this dtype, for the fraction reported')
  p.add_argument('--width', type=int, default=64, help='model.width (64 = the paper)')
  p.add_argument('--remat', action='store_true', help='config.remat (recompute UNet blocks)')
  p.add_argument('--profile-dir', default='', help='also write a jax.profiler trace of 3 steps')
  args = p.parse_args(argv)
  if args.steps < 1 or args.warmup < 0 or args.batch_size < 1 or args.upscale < 1:
    p.error('--steps, --batch-size and --upscale must be >= 1 and --warmup >= 0')
  return args


def main(argv=None):
  args = parse_args(argv)
  try:
    result = run(args)
  except (ValueError, FileNotFoundError) as e:
    print(f'error: {e.args[0] if e.args else e}', file=sys.stderr)
    return 2
  report(result)
  print('RESULT ' + json.dumps(result), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
