"""Where a step's time goes: a jax.profiler trace, summed per HLO op and per kind of op.

  XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true \
  python benchmarks/profile_step.py --width 64 --lr-size 128 --batch-size 2 --dtype float32

Takes the harness's flags (benchmarks/train_throughput.py), runs one warm-up
step and traces --steps more. On a CPU, XLA:CPU records one event per executed
thunk when `--xla_cpu_enable_xprof_traceme=true` is in XLA_FLAGS (the script
sets it if absent); on a GPU, the device plane holds one event per kernel.
Events are summed by name and joined with the optimised HLO's metadata: each
op's phase (forward, backward, losses + update), model scope (encoder/down1,
sfem/gate, ...) and primitive, convolutions split into forward, input-gradient
and weight-gradient. Tables by primitive, by module and the top ops; `RESULT
{json}` at the end.
"""

import collections
import glob
import json
import os
import re
import sys
import tempfile
import time

if '--xla_cpu_enable_xprof_traceme' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_cpu_enable_xprof_traceme=true').strip()

import jax  # pylint: disable=g-import-not-at-top

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_throughput as harness  # pylint: disable=g-import-not-at-top


_DEF = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\S+)\s+([\w\-]+)\((.*)$')


def hlo_ops(hlo: str) -> dict:
  """name -> (opcode, result shape, op_name metadata) for every instruction."""
  ops = {}
  for line in hlo.splitlines():
    m = _DEF.match(line)
    if m:
      meta = re.search(r'op_name="([^"]*)"', m.group(4))
      ops[m.group(1)] = (m.group(3), m.group(2), meta.group(1) if meta else '')
  return ops


def _dims(shape: str) -> tuple:
  m = re.match(r'\w+\[([\d,]*)\]', shape)
  return tuple(sorted(int(d) for d in m.group(1).split(',') if d)) if m else ()


def classify(name: str, ops: dict, kernel_dims: set) -> tuple[str, str, str]:
  """(phase, module, primitive) of a profiled op, from its HLO metadata.

  phase: fwd | bwd (under transpose(...)) | loss+update (outside the model);
  module: the model's top two scopes (encoder/down1, sfem/gate, ...);
  primitive: the jax primitive; convs split into fwd, grad-input and
  grad-weight (output shaped like a kernel).
  """
  base = name.split(' ')[0]
  if base not in ops:
    return 'runtime', '-', re.sub(r'[.\d]+$', '', base)
  opcode, shape, op_name = ops[base]
  if not op_name and _dims(shape) in kernel_dims and opcode in ('fusion', 'convolution'):
    return 'bwd', '-', 'conv grad-weight'  # XLA's rewritten weight-gradient convs lose metadata.
  path = op_name.split('/')
  prim = path[-1] if op_name else opcode
  model_at = next((i for i, p in enumerate(path) if 'DS2F' in p), None)
  if not op_name:  # Layout copies XLA inserted itself carry no source location.
    phase, module = 'unattributed', '-'
  elif model_at is None:
    phase, module = 'loss+update', 'losses/optimizer'
  else:
    phase = 'bwd' if 'transpose(' in path[model_at] else 'fwd'
    scopes = [p for p in path[model_at + 1:-1] if not p.startswith(('jvp', 'transpose', 'vmap'))]
    module = '/'.join(scopes[:2]) or '(top)'
  if prim == 'conv_general_dilated':
    if phase == 'fwd':
      prim = 'conv fwd'
    else:
      prim = 'conv grad-weight' if _dims(shape) in kernel_dims else 'conv grad-input'
  elif prim == 'dot_general':
    prim = 'dot (matmul)'
  elif opcode in ('copy', 'transpose') or base.startswith(('transpose_copy', 'copy')):
    prim = 'copy/transpose (layout)'
  return phase, module, prim


def trace_events(logdir: str):
  """(name, duration_s) of every op event: device planes if any, else XLA's CPU threads."""
  from jax.profiler import ProfileData  # pylint: disable=g-import-not-at-top
  path = sorted(glob.glob(os.path.join(logdir, '**', '*.xplane.pb'), recursive=True))[-1]
  data = ProfileData.from_file(path)
  device = [p for p in data.planes if p.name.startswith('/device:')]
  events = []
  for plane in device or [p for p in data.planes if p.name == '/host:CPU']:
    lines = list(plane.lines)
    if device:  # One event per HLO op on 'XLA Ops'; other lines repeat them per module/step.
      lines = [l for l in lines if l.name == 'XLA Ops'] or [
          l for l in lines if l.name not in ('XLA Modules', 'Steps')]
    else:
      lines = [l for l in lines if l.name.startswith(('tf_XLA', 'XLA'))]
    for line in lines:
      for e in line.events:
        if e.name.startswith(('end: ', 'ThreadpoolListener')):
          continue
        events.append((e.name, e.duration_ns / 1e9))
  return events


def main(argv=None):
  args = harness.parse_args(argv)
  try:
    compiled, carry, batch, config = harness.compile_program(args)
  except (ValueError, FileNotFoundError) as e:
    print(f'error: {e.args[0] if e.args else e}', file=sys.stderr)
    return 2
  ops = hlo_ops(compiled.as_text())
  train_mode = args.mode == 'train'

  def call(c):
    out = compiled(c, batch)
    return out if train_mode else (c, out)

  carry, out = call(carry)
  jax.block_until_ready((carry, out))
  logdir = args.profile_dir or tempfile.mkdtemp(prefix='ds2f_profile_')
  t0 = time.perf_counter()
  with jax.profiler.trace(logdir):
    for _ in range(args.steps):
      carry, out = call(carry)
    jax.block_until_ready((carry, out))
  wall = (time.perf_counter() - t0) / args.steps

  kernel_dims = {tuple(sorted(x.shape)) for x in jax.tree_util.tree_leaves(carry)
                 if getattr(x, 'ndim', 0) == 4}
  by_name, by_prim, by_module = (collections.Counter() for _ in range(3))
  for name, dur in trace_events(logdir):
    if name.startswith('ThunkExecutor') or name.startswith('SlinkyThreadPool'):
      continue  # Spans of the runtime that enclose the ops themselves.
    phase, module, prim = classify(name, ops, kernel_dims)
    by_name[name] += dur / args.steps
    by_prim[f'{phase:11s} {prim}'] += dur / args.steps
    by_module[f'{phase:11s} {module}'] += dur / args.steps
  total = sum(by_prim.values())
  print(f'wall {wall:.3f} s/step; summed op time {total:.3f} s/step '
        f'(> wall where ops ran in parallel); trace in {logdir}')
  for title, table in (('by phase and primitive', by_prim), ('by phase and module', by_module)):
    print(title + ':')
    for k, v in table.most_common(20):
      print(f'  {v:9.4f} s  {100 * v / total:5.1f} %  {k}')
  print('top ops:')
  for k, v in by_name.most_common(20):
    base = k.split(' ')[0]
    _, shape, op_name = ops.get(base, ('', '', ''))
    print(f'  {v:9.4f} s  {100 * v / total:5.1f} %  {k} {shape} {op_name[-70:]}')
  result = {'wall_s_per_step': wall, 'op_s_per_step': total,
            'by_primitive': dict(by_prim.most_common()), 'by_module': dict(by_module.most_common()),
            'top_ops': dict(by_name.most_common(40)),
            'setting': {k: v for k, v in vars(args).items()},
            'device': jax.devices()[0].device_kind, 'xla_flags': os.environ.get('XLA_FLAGS')}
  print('RESULT ' + json.dumps(result), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
