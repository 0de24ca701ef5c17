"""FLOPs and parameters of a model's inference path and training graph, per image.

Two FLOP counts:

* `flops` follows PyTorch's FlopCounterMode (docs/method.md §Model size and FLOPs):
  convolutions and matrix products only, 2 FLOPs per multiply-accumulate, read
  from the jaxpr (nested jaxprs included: jit, remat, custom_jvp/vjp, cond
  (largest branch), scan (x length), while (body once)). Two of our layers are
  written differently from PyTorch's, and count as PyTorch's do:
  - bilinear resizes are small matmuls with a fixed interpolation matrix. PyTorch
    counts `upsample_bilinear2d` as zero, so a `dot_general` with an operand that
    is a trace-time constant (a fixed linear map, not a learned layer) is not
    counted;
  - depthwise convs (RCAB, MSConv) are shifted multiply-adds (element-wise), so
    they are not counted either, where PyTorch counts 2*9 FLOPs per output
    element: 1440 FLOPs per pixel of the CrossGL(hidden 32) input, i.e. 0.094
    GFLOP for the UNet at LR 256^2 and 0.006 GFLOP for DeepLab (<0.05 %).
* `xla_flops` is XLA's own estimate (`cost_analysis()['flops']` of the lowered
  function), which also counts element-wise work (BN, activations, resizes,
  depthwise convs, pooling) but, for convolutions, only the kernel taps that land
  inside the input: heavily dilated convs on small maps (DeepLab's ASPP, rates
  12-36 on a 32^2 map at LR 256^2) count far less than k^2 taps, so DeepLab's XLA
  total is *below* its FlopCounterMode-convention count.

The training graph is the train-mode forward (all branches, BN in batch mode),
without losses and backward: the "train-mode forward" of docs/method.md §Model size and FLOPs.

Per image at LR 256^2, r = 2, GFLOP (train forward / inference), flops | xla_flops:
  DS2F-UNet width 64        193.44 / 96.34 | 200.6 / 98.9   (official 193.5 / 96.3)
  DS2F-DeepLabV3+ R50 OS8   216.38 / 91.25 | 198.7 / 68.6   (official 215.3 / 91.2 with
                            CAGL; CrossGL(256, 256) costs ~1.1 GFLOP more)
"""

import dataclasses
import functools
import math

import jax
import jax.extend.core as jcore
import jax.numpy as jnp

from ds2f_jax.models import registry
from ds2f_jax.models.layers import count_params


@dataclasses.dataclass(frozen=True)
class PathCost:
  """Per-image cost of one path of the model."""
  flops: int  # Convs and learned matmuls, 2 FLOPs / MAC.
  params: int
  xla_flops: float | None = None  # XLA cost analysis; None when not asked for.


def _conv_macs(eqn) -> int:
  rhs = eqn.invars[1].aval.shape
  rhs_spec = eqn.params['dimension_numbers'].rhs_spec  # (out, in, *spatial).
  window = math.prod(rhs[d] for d in rhs_spec[2:])
  return math.prod(eqn.outvars[0].aval.shape) * window * rhs[rhs_spec[1]]


def _dot_macs(eqn) -> int:
  (_, rhs_contract), (_, rhs_batch) = eqn.params['dimension_numbers']
  lhs, rhs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
  rhs_free = math.prod(n for d, n in enumerate(rhs) if d not in (*rhs_contract, *rhs_batch))
  return math.prod(lhs) * rhs_free


def _subjaxprs(eqn):
  """(jaxpr, outer var or None per inner invar, multiplier, param name) per sub-jaxpr."""
  for key, value in eqn.params.items():
    values = value if isinstance(value, (tuple, list)) else (value,)
    for v in values:
      if isinstance(v, jcore.ClosedJaxpr):
        v = v.jaxpr
      if not isinstance(v, jcore.Jaxpr):
        continue
      n_in = len(v.invars)
      if eqn.primitive.name == 'scan':  # Only the leading consts are loop-invariant.
        outer = list(eqn.invars[:eqn.params['num_consts']]) + [None] * (
            n_in - eqn.params['num_consts'])
        yield v, outer, eqn.params['length'], key
      elif eqn.primitive.name == 'while':
        if key == 'cond_jaxpr':
          nc = eqn.params['cond_nconsts']
          outer = list(eqn.invars[:nc])
        else:
          nc = eqn.params['body_nconsts']
          start = eqn.params['cond_nconsts']
          outer = list(eqn.invars[start:start + nc])
        yield v, outer + [None] * (n_in - nc), 1, key
      else:  # jit, remat, custom_jvp/vjp, cond (after the branch index): trailing invars.
        outer = list(eqn.invars[len(eqn.invars) - n_in:]) if n_in <= len(eqn.invars) else []
        yield v, outer + [None] * (n_in - len(outer)), 1, key


def _count(jaxpr, const_in) -> int:
  """MACs of convs and non-constant dot_generals; const_in[i]: invar i is constant."""
  const = set(jaxpr.constvars)
  const.update(v for v, c in zip(jaxpr.invars, const_in) if c)

  def is_const(a):
    return isinstance(a, jcore.Literal) or a in const

  macs = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'conv_general_dilated':
      macs += _conv_macs(eqn)
    elif name == 'dot_general' and not any(is_const(a) for a in eqn.invars):
      macs += _dot_macs(eqn)
    groups = {}
    for sub, outer, mult, key in _subjaxprs(eqn):
      inner = _count(sub, [o is not None and is_const(o) for o in outer]) * mult
      groups.setdefault(key, []).append(inner)
    # Alternatives (cond branches) count their largest; distinct sub-jaxprs add up.
    macs += sum(max(v) if k == 'branches' else sum(v) for k, v in groups.items())
    if all(is_const(a) for a in eqn.invars) and not eqn.effects:
      const.update(eqn.outvars)
  return macs


def conv_matmul_flops(fn, *args) -> int:
  """2 x MACs of the convs and learned matmuls of fn(*args); args may be ShapeDtypeStructs."""
  closed = jax.make_jaxpr(fn)(*args)
  return 2 * _count(closed.jaxpr, [False] * len(closed.jaxpr.invars))


def _flops_of(cost):
  if isinstance(cost, (list, tuple)):  # Older jax: one dict per device program.
    cost = cost[0] if cost else None
  return float(cost['flops']) if cost and 'flops' in cost else None


def xla_flops(fn, *args) -> float:
  """XLA's FLOP estimate for fn(*args), from the lowered HLO (no compile) where available."""
  lowered = jax.jit(fn).lower(*args)
  flops = _flops_of(lowered.cost_analysis())
  if flops is None:  # Backends without a pre-compile analysis.
    flops = _flops_of(lowered.compile().cost_analysis())
  if flops is None:
    raise ValueError('XLA cost analysis reports no flops on this backend')
  return flops


def model_costs(model_cfg, lr_size, dtype='float32', xla=False) -> dict[str, PathCost]:
  """{'inference': PathCost, 'train': PathCost} of `model_cfg` on one LR image of lr_size.

  lr_size is the model's input size: for `seg_hr` pass the HR size. xla=True adds
  XLA's estimate (lowering both paths: about a second each at full size on a CPU).
  """
  model = registry.create_model(model_cfg, dtype=dtype)
  x = jax.ShapeDtypeStruct((1, *lr_size, model_cfg.in_channels), jnp.float32)
  out = {}
  for path, train in (('inference', False), ('train', True)):
    variables = jax.eval_shape(functools.partial(model.init, train=train), jax.random.key(0), x)
    mutable = ['batch_stats'] if train else False
    fn = functools.partial(model.apply, train=train, mutable=mutable)
    out[path] = PathCost(flops=conv_matmul_flops(fn, variables, x),
                         params=count_params(variables['params']),
                         xla_flops=xla_flops(fn, variables, x) if xla else None)
  return out
