"""ImageNet ResNet weights for the DeepLabV3+ backbone, from a torchvision-layout `.npz`.

The `.npz` holds a torchvision ResNet state dict as NumPy arrays: torchvision's
key names and PyTorch layouts (conv weights OIHW). `scripts/convert_torchvision_resnet.py`
writes it from a `.pth` (it is the only place that needs torch). Keeping torchvision's
names in the file means one mapping, here, from them to our modules:

  conv1.weight (O, I, kh, kw)        -> params  conv1/kernel (kh, kw, I, O)
  bn1.weight / bias                  -> params  bn1/scale / bias
  bn1.running_mean / running_var     -> batch_stats  bn1/mean / var
  layer{s}.{b}.conv{k} / bn{k}       -> layer{s}_{b}/conv{k} / bn{k}
  layer{s}.{b}.downsample.0 / .1     -> layer{s}_{b}/downsample_conv / downsample_bn

`fc.*` and `num_batches_tracked` are ignored; every other key must be used.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np

# Keys of a torchvision state dict that the backbone has no use for.
_IGNORED_SUFFIXES = ('num_batches_tracked',)
_IGNORED_PREFIXES = ('fc.',)

# (collection, our leaf name) -> torchvision suffix.
_BN_LEAVES = {('params', 'scale'): 'weight', ('params', 'bias'): 'bias',
              ('batch_stats', 'mean'): 'running_mean', ('batch_stats', 'var'): 'running_var'}


def _torch_module_name(path: tuple[str, ...]) -> str:
  """('layer1_0', 'downsample_conv') -> 'layer1.0.downsample.0'."""
  names = []
  for p in path:
    if p.startswith('layer') and '_' in p:
      names.extend(p.split('_'))
    elif p == 'downsample_conv':
      names.append('downsample.0')
    elif p == 'downsample_bn':
      names.append('downsample.1')
    else:
      names.append(p)
  return '.'.join(names)


def _is_tree(v):
  return hasattr(v, 'items')


def _set(tree, path, value):
  """Copy of `tree` (nested dicts) with the subtree at `path` replaced."""
  out = dict(tree)
  out[path[0]] = value if len(path) == 1 else _set(tree[path[0]], path[1:], value)
  return out


def read_npz(path: str) -> dict[str, np.ndarray]:
  """The arrays of a converted state dict; one-line errors for a missing or foreign file."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'model.pretrained={path!r}: no such file')
  if not path.endswith('.npz'):
    raise ValueError(f'model.pretrained={path!r}: expected a .npz; convert a torchvision .pth '
                     'with scripts/convert_torchvision_resnet.py')
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


def load_resnet(variables, state: dict[str, np.ndarray], source: str = 'state dict'):
  """`variables` ({'params', 'batch_stats'} of a deeplab.ResNet) with every leaf from `state`.

  `state` maps torchvision keys to arrays in PyTorch layout. Errors name the key.
  """
  used = set()

  def load_leaf(collection, path, leaf):
    module, name = _torch_module_name(path[:-1]), path[-1]
    where = f'{collection}/{"/".join(path)}'
    if name == 'kernel':  # PyTorch (O, I, kh, kw) <-> ours (kh, kw, I, O).
      key, perm = f'{module}.weight', (2, 3, 1, 0)
    elif (collection, name) in _BN_LEAVES:
      key, perm = f'{module}.{_BN_LEAVES[collection, name]}', None
    else:
      raise ValueError(f'backbone leaf {where} has no torchvision counterpart')
    if key not in state:
      raise ValueError(f'{source}: missing key {key!r} (for {where})')
    value = np.asarray(state[key])
    want = tuple(leaf.shape) if perm is None else tuple(leaf.shape[i] for i in (3, 2, 0, 1))
    if value.shape != want:
      raise ValueError(f'{source}: key {key!r} has shape {value.shape}, the backbone needs {want}')
    used.add(key)
    value = np.asarray(value if perm is None else np.transpose(value, perm), leaf.dtype)
    # A placed leaf (e.g. replicated over the mesh) keeps its placement.
    if isinstance(leaf, jax.Array):
      return jax.device_put(value, leaf.sharding)
    return jnp.asarray(value)

  def load_tree(collection, tree, path=()):
    return {k: load_tree(collection, v, path + (k,)) if _is_tree(v) else
            load_leaf(collection, path + (k,), v) for k, v in tree.items()}

  out = {c: load_tree(c, variables[c]) for c in ('params', 'batch_stats')}
  extra = sorted(k for k in state if k not in used and not k.startswith(_IGNORED_PREFIXES)
                 and not k.endswith(_IGNORED_SUFFIXES))
  if extra:
    raise ValueError(f'{source}: unexpected key {extra[0]!r} ({len(extra)} unused keys; a '
                     'different ResNet depth than model.backbone?)')
  return {**variables, **out}


def load_backbone(variables, path: str):
  """DS2F-DeepLabV3+ `variables` with the ImageNet backbone from the `.npz` at `path`.

  Call after `model.init` (train code: when model.pretrained is set). Replaces
  params and BN running statistics under encoder/backbone, on the devices the
  replaced leaves were on; the rest is kept as it is.
  """
  try:
    params, stats = variables['params']['encoder']['backbone'], variables['batch_stats'][
        'encoder']['backbone']
  except KeyError as e:
    raise ValueError(f'model.pretrained={path!r}: the model has no encoder/backbone '
                     f'(missing {e}); only ds2f_deeplabv3plus has a ResNet backbone') from None
  backbone = load_resnet({'params': params, 'batch_stats': stats}, read_npz(path), path)
  out = dict(variables)
  out['params'] = _set(variables['params'], ('encoder', 'backbone'), backbone['params'])
  out['batch_stats'] = _set(variables['batch_stats'], ('encoder', 'backbone'),
                            backbone['batch_stats'])
  return out
