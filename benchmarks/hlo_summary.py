"""What XLA made of the train step (or inference forward): a census of the optimised HLO.

  python benchmarks/hlo_summary.py --width 16 --lr-size 64 --batch-size 2 --dtype float32 \
      [--dump /tmp/step.hlo.txt]

Takes the harness's flags (benchmarks/train_throughput.py), compiles the same
program and counts, in the optimised HLO: instructions by opcode, fusions by kind,
convolutions by layout (dim_labels) and dtype, custom calls (library kernels
such as LAPACK/cuSOLVER for RMI's solve and Cholesky), and the largest layout
changes (copy / transpose). Also XLA's cost analysis of the whole program and
of RMI alone (forward + backward at the run's HR size). Prints `RESULT {json}`.
"""

import collections
import json
import os
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_throughput as harness  # pylint: disable=g-import-not-at-top

from ds2f_jax import losses  # pylint: disable=g-import-not-at-top

_INSTR = re.compile(r'^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(\S+)\s+([\w\-]+)\(')
_BYTES = {'f32': 4, 'bf16': 2, 's32': 4, 'u32': 4, 'pred': 1, 'f16': 2, 's8': 1, 'u8': 1,
          'f64': 8, 's64': 8, 'u64': 8}


def _shape_bytes(shape: str) -> int:
  m = re.match(r'(\w+)\[([\d,]*)\]', shape)
  if not m or m.group(1) not in _BYTES:
    return 0
  dims = [int(d) for d in m.group(2).split(',') if d]
  return _BYTES[m.group(1)] * int(np.prod(dims)) if dims else _BYTES[m.group(1)]


def census(hlo: str) -> dict:
  """Counts of the optimised HLO text: opcodes, fusion kinds, convs, custom calls, copies."""
  opcodes = collections.Counter()
  fusion_kinds = collections.Counter()
  convs = collections.Counter()
  custom = collections.Counter()
  moves = []
  for line in hlo.splitlines():
    m = _INSTR.match(line)
    if not m:
      continue
    shape, op = m.groups()
    opcodes[op] += 1
    if op == 'fusion':
      k = re.search(r'kind=(\w+)', line)
      fusion_kinds[k.group(1) if k else '?'] += 1
    elif op == 'convolution':
      labels = re.search(r'dim_labels=(\S+?)[,\s]', line)
      convs[f'{shape.split("[")[0]} {labels.group(1) if labels else "?"}'] += 1
    elif op == 'custom-call':
      t = re.search(r'custom_call_target="([^"]+)"', line)
      custom[t.group(1) if t else '?'] += 1
    if op in ('copy', 'transpose'):
      moves.append((_shape_bytes(shape), op, shape))
  moves.sort(reverse=True)
  return {
      'instructions': sum(opcodes.values()),
      'opcodes': dict(opcodes.most_common()),
      'fusion_kinds': dict(fusion_kinds),
      'convolutions': dict(convs),
      'custom_calls': dict(custom),
      'copy_transpose_count': len(moves),
      'copy_transpose_bytes': int(sum(b for b, _, _ in moves)),
      'largest_copies': [f'{op} {shape} ({b / 2**20:.1f} MiB)' for b, op, shape in moves[:8]],
  }


def rmi_cost(batch: int, hr_size, num_classes: int = 2) -> dict:
  """XLA's flops and bytes for RMI forward + backward alone, and its time on this device."""
  import time  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(batch, *hr_size, num_classes)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, num_classes, (batch, *hr_size)), jnp.int32)
  fn = jax.jit(jax.value_and_grad(lambda z: losses.rmi_loss(z, labels, num_classes)))
  compiled = fn.lower(logits).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  jax.block_until_ready(compiled(logits))
  times = []
  for _ in range(5):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(logits))
    times.append(time.perf_counter() - t0)
  return {'flops': float(cost.get('flops', 0.0)),
          'bytes_accessed': float(cost.get('bytes accessed', 0.0)),
          'median_s': float(np.median(times)),
          'custom_calls': census(compiled.as_text())['custom_calls']}


def main(argv=None):
  p_args = [a for a in (argv if argv is not None else sys.argv[1:])]
  dump = None
  if '--dump' in p_args:
    i = p_args.index('--dump')
    dump = p_args[i + 1]
    del p_args[i:i + 2]
  args = harness.parse_args(p_args)
  try:
    compiled, carry, batch, config = harness.compile_program(args)
  except (ValueError, FileNotFoundError) as e:
    print(f'error: {e.args[0] if e.args else e}', file=sys.stderr)
    return 2
  hlo = compiled.as_text()
  if dump:
    with open(dump, 'w') as f:
      f.write(hlo)
  result = census(hlo)
  result['xla_flops'] = harness._cost_flops(compiled)  # pylint: disable=protected-access
  if args.mode == 'train':
    result['rmi'] = rmi_cost(args.batch_size, config.data.hr_size)
  result['setting'] = {k: v for k, v in vars(args).items() if k != 'profile_dir'}
  result['device'] = jax.devices()[0].device_kind
  for key in ('instructions', 'fusion_kinds', 'convolutions', 'custom_calls',
              'copy_transpose_count', 'copy_transpose_bytes', 'largest_copies', 'xla_flops', 'rmi'):
    if key in result:
      print(f'{key}: {result[key]}')
  top = list(result['opcodes'].items())[:15]
  print('top opcodes:', ', '.join(f'{k} {v}' for k, v in top))
  print('RESULT ' + json.dumps(result), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
