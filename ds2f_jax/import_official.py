"""`--mode import`: an official DS2F PyTorch checkpoint -> a step-0 workdir of this project.

  python main.py --mode import --config C --workdir W --input official.pth

Reads what the official training script saves (`{'model': state_dict, 'lr_sche': ...,
'optimizer': ...}`) or a bare state_dict, with or without DDP `module.` prefixes,
maps every tensor onto the model that the config builds (OIHW -> HWIO, BN
weight/bias/running stats -> scale/bias/mean/var), checks every key and shape, and
writes W/config.json and a step-0 checkpoint exactly as `--mode train` does, so
eval, predict and export work on W and `--mode train` fine-tunes from it (fresh
optimiser). A checkpoint holding only the inference path is accepted: the SR
stream and the SFEM then start from initialisation. For DS2F-DeepLabV3+ the
official SFEM is CAGL, which this project replaces by MSCG (docs/method.md,
DeepLabV3+ variant); its tensors are skipped and the SFEM starts from init.

torch is imported only by `read_state_dict`; the name mapping itself is NumPy.
"""

import json
import os
import pickle
import re
import zipfile

import jax
import numpy as np
from absl import logging
from flax import traverse_util

# Our module path (joined with '/') -> official module prefix, first match wins.
_UNET_RULES = (
    (r'encoder/down5/ConvBNAct_(\d)', lambda m: f'down5.conv{int(m[1]) + 1}'),
    (r'encoder/(down\d)/ConvBNAct_(\d)', lambda m: f'{m[1]}.conv.conv{int(m[2]) + 1}'),
    (r'(seg|sr)_decoder/(up\d)/ConvBNAct_0', lambda m: f'{_pre(m[1])}{m[2]}.upsample_conv'),
    (r'(seg|sr)_decoder/(up\d)/DoubleConv_0/ConvBNAct_(\d)',
     lambda m: f'{_pre(m[1])}{m[2]}.conv.conv{int(m[3]) + 1}'),
    (r'sfem/fuse', lambda m: 'sr_seg_fusion_module.fusion_conv.0'),
    (r'sfem/fuse_bn', lambda m: 'sr_seg_fusion_module.fusion_conv.1'),
    (r'sfem/gate/RCAB_0/Conv_(\d)', lambda m: 'sr_seg_fusion_module.fusion_conv.3.rcab.'
     + ('conv1', 'conv2', 'se.0', 'se.2')[int(m[1])]),
    (r'sfem/gate/MSConv_0/Conv_3',
     lambda m: 'sr_seg_fusion_module.fusion_conv.3.msconv.convs.3.conv'),
    (r'sfem/gate/MSConv_0/Conv_(\d)',
     lambda m: f'sr_seg_fusion_module.fusion_conv.3.msconv.convs.{m[1]}'),
    (r'sfem/gate/MSConv_0/BatchNorm_0', lambda m: 'sr_seg_fusion_module.fusion_conv.3.msconv.norm'),
    (r'sfem/(sr|seg)_proj', lambda m: f'sr_seg_fusion_module.linear_cross_{m[1]}.0'),
    (r'sfem/(sr|seg)_out', lambda m: f'sr_seg_fusion_module.gate_{m[1]}'),
    (r'sr_head/Conv_(\d)', lambda m: f'sr_module.{2 * int(m[1])}'),
    (r'out_conv', lambda m: 'out_conv'),
)

_DEEPLAB_RULES = (
    (r'encoder/backbone/conv1', lambda m: 'backbone.conv1.conv'),
    (r'encoder/backbone/bn1', lambda m: 'backbone.conv1.norm_layer'),
    (r'encoder/backbone/layer(\d)_(\d+)/conv(\d)',
     lambda m: f'backbone.layer{m[1]}.{m[2]}.conv{m[3]}.conv'),
    (r'encoder/backbone/layer(\d)_(\d+)/bn(\d)',
     lambda m: f'backbone.layer{m[1]}.{m[2]}.conv{m[3]}.norm_layer'),
    (r'encoder/backbone/layer(\d)_(\d+)/downsample_conv',
     lambda m: f'backbone.layer{m[1]}.{m[2]}.downsample.0.conv'),
    (r'encoder/backbone/layer(\d)_(\d+)/downsample_bn',
     lambda m: f'backbone.layer{m[1]}.{m[2]}.downsample.0.norm_layer'),
    (r'encoder/aspp/branch(\d)/(Conv|BatchNorm)_0',
     lambda m: f'aspp.branch{int(m[1]) + 1}.{_CBA[m[2]]}'),
    (r'encoder/aspp/image_pool/(Conv|BatchNorm)_0', lambda m: f'aspp.branch5.conv.{_CBA[m[1]]}'),
    (r'encoder/aspp/project/(Conv|BatchNorm)_0', lambda m: f'aspp.conv.0.{_CBA[m[1]]}'),
    (r'encoder/aspp/project_bn2', lambda m: 'aspp.conv.1'),
    (r'(seg|sr)_decoder/conv_low', lambda m: f'decoder_{m[1]}.conv_low'),
    (r'(seg|sr)_decoder/conv(\d)/(Conv|BatchNorm)_0',
     lambda m: f'decoder_{m[1]}.fusion_conv.{int(m[2]) - 1}.{_CBA[m[3]]}'),
    (r'sr_head/Conv_(\d)', lambda m: f'sr.{2 * int(m[1])}'),
    (r'out_conv', lambda m: 'out_conv'),
)
# Official DeepLab SFEM (CAGL): no counterpart here, its tensors are skipped.
_DEEPLAB_SKIPPED = 'sr_seg_fusion_module.'

_CBA = {'Conv': 'conv', 'BatchNorm': 'norm_layer'}
# Inside a UNet ConvBNAct: the conv and the BN of the official `Conv2d` block.
_INNER = {'Conv_0': 'conv', 'BatchNorm_0': 'norm_layer'}
_LEAF = {('params', 'kernel'): 'weight', ('params', 'bias'): 'bias',
         ('params', 'scale'): 'weight', ('batch_stats', 'mean'): 'running_mean',
         ('batch_stats', 'var'): 'running_var'}


def _pre(stream):
  return 'sr_' if stream == 'sr' else ''


def _module_key(name: str, path: tuple[str, ...]) -> str:
  """Official module prefix of our module `path`; KeyError if it has none."""
  rules = _UNET_RULES if name == 'ds2f_unet' else _DEEPLAB_RULES
  joined = '/'.join(path)
  for pattern, make in rules:
    m = re.fullmatch(pattern, joined)
    if m:
      return make(m)
  if name == 'ds2f_unet' and path and path[-1] in _INNER:  # A ConvBNAct's conv or BN.
    return f'{_module_key(name, path[:-1])}.{_INNER[path[-1]]}'
  raise KeyError(joined)


def name_map(model_name: str, variables) -> dict:
  """{(collection, *module path, leaf): official state_dict key} for every variable
  of ours that the official model holds (the DeepLab SFEM has none)."""
  out = {}
  for path, _ in jax.tree_util.tree_flatten_with_path(variables)[0]:
    keys = tuple(k.key for k in path)
    collection, *mods, leaf = keys
    if model_name == 'ds2f_deeplabv3plus' and mods[0] == 'sfem':
      continue
    out[keys] = f'{_module_key(model_name, tuple(mods))}.{_LEAF[(collection, leaf)]}'
  return out


def to_official_layout(keys: tuple, value: np.ndarray) -> np.ndarray:
  """Our array -> the official tensor layout (HWIO -> OIHW for kernels)."""
  return np.transpose(value, (3, 2, 0, 1)) if keys[-1] == 'kernel' else value


def from_official_layout(keys: tuple, value: np.ndarray) -> np.ndarray:
  return np.transpose(value, (2, 3, 1, 0)) if keys[-1] == 'kernel' else value


def is_training_only(keys: tuple) -> bool:
  """SR stream, SR head and SFEM: absent from an inference-only checkpoint."""
  return keys[1] in ('sr_decoder', 'sr_head', 'sfem')


def read_state_dict(path: str) -> dict:
  """{key: float32 ndarray} of an official .pth ({'model': ...} or bare, `module.` stripped)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ValueError('--mode import reads PyTorch checkpoints and needs torch: '
                     'pip install torch') from None
  if not os.path.isfile(path):
    raise FileNotFoundError(f'--input {path}: no such file')
  try:
    obj = _torch_load(torch, path)
  except Exception as e:  # pylint: disable=broad-except  # Truncated or not a torch file.
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    why = first if zipfile.is_zipfile(path) else 'truncated, or not written by torch.save'
    raise ValueError(f'--input {path} is not a readable PyTorch checkpoint ({why})') from None
  sd = obj.get('model', obj) if isinstance(obj, dict) else None
  if not isinstance(sd, dict) or not sd or not all(torch.is_tensor(v) for v in sd.values()):
    raise ValueError(f"--input {path} holds no state_dict (expected {{'model': state_dict, ...}} "
                     'or a bare state_dict of tensors)')
  out = {}
  for k, v in sd.items():
    k = k[len('module.'):] if k.startswith('module.') else k
    if not k.endswith('num_batches_tracked'):
      out[k] = v.detach().cpu().float().numpy()
  return out


def _torch_load(torch, path: str):
  """torch.load with weights_only; a complete torch.save archive that also pickles
  other objects (e.g. NumPy scalars saved beside the weights) is loaded in full."""
  try:
    return torch.load(path, map_location='cpu', weights_only=True)
  except pickle.UnpicklingError:
    if not zipfile.is_zipfile(path):
      raise
  logging.warning('%s holds objects besides tensors; loading it with weights_only=False '
                  '(only do this for files you trust).', path)
  return torch.load(path, map_location='cpu', weights_only=False)


def map_state_dict(model_name: str, sd: dict, target) -> tuple[dict, list]:
  """Our variables tree from an official state_dict, checked against `target` (the
  variables the config builds, used for shapes and for whatever the file lacks).

  Returns (variables, names of groups left at initialisation).
  Raises ValueError naming the first unexpected, missing or misshapen key.
  """
  names = name_map(model_name, target)
  flat = {tuple(k.key for k in p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(target)[0]}
  wanted = {names[k]: k for k in names}
  for key, value in sd.items():
    if model_name == 'ds2f_deeplabv3plus' and key.startswith(_DEEPLAB_SKIPPED):
      continue
    if key not in wanted:
      raise ValueError(f'unexpected key {key} {tuple(value.shape)} in the checkpoint: it is not '
                       f'part of model.name={model_name!r} as this config builds it')
    ours = wanted[key]
    shape = to_official_layout(ours, flat[ours]).shape
    if tuple(value.shape) != shape:
      raise ValueError(f'{key}: shape {tuple(value.shape)} in the checkpoint, {shape} in this '
                       'config (model.width, in_channels, num_classes, upscale?)')
  has_training = any(is_training_only(k) and names[k] in sd for k in names)
  left = set()
  for ours, key in names.items():
    if key in sd:
      flat[ours] = from_official_layout(ours, sd[key]).astype(flat[ours].dtype)
    elif is_training_only(ours) and not has_training:
      left.add(ours[1])
    else:
      shape = to_official_layout(ours, flat[ours]).shape
      raise ValueError(f'missing key {key} {shape} in the checkpoint (model.name={model_name!r})')
  if model_name == 'ds2f_deeplabv3plus':
    left.add('sfem')
  return traverse_util.unflatten_dict(flat), sorted(left)


def import_checkpoint(config, workdir: str, path: str) -> int:
  """Validates `path` against `config` fully, then writes workdir/config.json and
  checkpoint step 0; returns the number of imported tensors."""
  from ds2f_jax import checkpointing, sharding, train  # pylint: disable=g-import-not-at-top
  if not path:
    raise ValueError('--mode import needs --input OFFICIAL.pth')
  train.validate_config(config)
  workdir = os.path.abspath(workdir)
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
    raise ValueError(f'workdir {workdir} already holds checkpoints; import into a new --workdir')
  sd = read_state_dict(path)
  mesh = sharding.create_mesh()
  model, tx = train.create_model(config), train.create_optimizer(config)
  state = train.init_state(config, model, tx, mesh)
  target = jax.device_get({'params': state.params, 'batch_stats': state.batch_stats})
  variables, left = map_state_dict(config.model.name, sd, target)
  rep = sharding.replicated(mesh)
  params = jax.device_put(variables['params'], rep)
  state = state.replace(params=params, batch_stats=jax.device_put(variables['batch_stats'], rep),
                        opt_state=jax.jit(tx.init, out_shardings=rep)(params))
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(config.to_dict(), f, indent=2, default=list)
  mngr = checkpointing.create_manager(workdir, config.keep_checkpoints)
  checkpointing.save(mngr, 0, state)
  checkpointing.finish(mngr)
  n = len(sd) - sum(k.startswith(_DEEPLAB_SKIPPED) for k in sd
                    if config.model.name == 'ds2f_deeplabv3plus')
  logging.info('Imported %d tensors of %s into %s (step 0)%s.', n, path, ckpt_dir,
               f'; from initialisation: {", ".join(left)}' if left else '')
  return n
