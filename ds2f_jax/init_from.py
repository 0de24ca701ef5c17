"""`config.init_from=PATH`: a new training run starting from another run's weights.

PATH is a workdir (its newest checkpoint) or an export folder (`--mode export`
output). Parameters and BatchNorm statistics are taken over; the step is 0 and the
optimiser state fresh. Every taken tensor must exist in the model this config
builds, with the same shape. Tensors the source lacks may only be training-only
ones (SR stream, SR head, SFEM: an export holds the inference path alone); they
keep their initialisation.
"""

import os

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import traverse_util
from etils import epath

_COLLECTIONS = ('params', 'batch_stats')
_TRAINING_ONLY = ('sr_decoder', 'sr_head', 'sfem')


def _flat(tree) -> dict:
  def name(k):
    for attr in ('key', 'name', 'idx'):
      if hasattr(k, attr):
        return str(getattr(k, attr))
    return str(k)
  return {tuple(name(k) for k in p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _from_export(path: str) -> dict:
  from ds2f_jax import serving  # pylint: disable=g-import-not-at-top
  params_file = os.path.join(path, serving.PARAMS_FILE)
  try:
    with open(params_file, 'rb') as f:
      tree = flax.serialization.msgpack_restore(f.read())
  except (OSError, ValueError, TypeError) as e:
    raise ValueError(f'config.init_from={path}: {params_file} cannot be read ({e})') from None
  return {k: np.asarray(v) for k, v in _flat(tree).items() if k[0] in _COLLECTIONS}


def _from_workdir(path: str, target: dict) -> dict:
  from ds2f_jax import checkpointing  # pylint: disable=g-import-not-at-top
  mngr = checkpointing.create_manager(path, 1, read_only=True)
  try:
    step = mngr.latest_step()
    if step is None:
      raise FileNotFoundError(f'config.init_from={path}: no checkpoint in {mngr.directory}')
    meta = ocp.StandardCheckpointHandler().metadata(
        epath.Path(str(mngr.directory)) / str(step) / 'state').tree
    saved = {k: tuple(v.shape) for k, v in _flat(meta).items() if k[0] in _COLLECTIONS}
    _check(path, saved, {k: tuple(v.shape) for k, v in _flat(target).items()})
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    wanted = _flat(target)
    item = traverse_util.unflatten_dict({k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=device)
                       for k, v in wanted.items() if k in saved})
    args = ocp.args.PyTreeRestore(item=item, partial_restore=True,
                                  restore_args=ocp.checkpoint_utils.construct_restore_args(item))
    restored = mngr.restore(step, args=ocp.args.Composite(state=args))['state']
  finally:
    mngr.close()
  logging.info('init_from: step %d of %s.', step, path)
  return {k: np.asarray(v) for k, v in _flat(restored).items()}


def _check(path: str, source: dict, target: dict) -> None:
  """One-line errors: a source tensor this config lacks or shapes differently, or a
  tensor of the inference path the source lacks."""
  for key in sorted(source):
    if key not in target:
      raise ValueError(f'config.init_from={path}: {"/".join(key)} {source[key]} is not part of '
                       'the model this config builds')
    if tuple(source[key]) != tuple(target[key]):
      raise ValueError(f'config.init_from={path}: {"/".join(key)}: shape {tuple(source[key])} '
                       f'there, {tuple(target[key])} in this config')
  for key in sorted(target):
    if key not in source and key[1] not in _TRAINING_ONLY:
      raise ValueError(f'config.init_from={path}: {"/".join(key)} {tuple(target[key])} is '
                       'missing there')


def initialize(config, state):
  """`state` (step 0, fresh optimiser) with params and BN statistics from
  config.init_from; unchanged when it is ''."""
  path = config.get('init_from', '')
  if not path:
    return state
  path = os.path.abspath(os.path.expanduser(path))
  target = {'params': state.params, 'batch_stats': state.batch_stats}
  from ds2f_jax import serving  # pylint: disable=g-import-not-at-top
  if os.path.isfile(os.path.join(path, serving.INFO_FILE)):
    source = _from_export(path)
    _check(path, {k: v.shape for k, v in source.items()},
           {k: tuple(v.shape) for k, v in _flat(target).items()})
  elif os.path.isdir(os.path.join(path, 'checkpoints')):
    source = _from_workdir(path, target)
  else:
    raise FileNotFoundError(f'config.init_from={path} is neither a workdir with checkpoints/ '
                            'nor an export folder (export_info.json)')
  flat = _flat(target)
  kept = sorted({k[1] for k in flat if k not in source})
  merged = {k: (source[k].astype(v.dtype) if k in source else v) for k, v in flat.items()}
  shardings = jax.tree_util.tree_map(lambda a: a.sharding, target)
  loaded = jax.device_put(traverse_util.unflatten_dict(merged), shardings)
  logging.info('init_from %s: %d tensors taken%s; step 0, fresh optimiser.', path,
               len(flat) - sum(k not in source for k in flat),
               f', {", ".join(kept)} from initialisation' if kept else '')
  return state.replace(params=loaded['params'], batch_stats=loaded['batch_stats'])
