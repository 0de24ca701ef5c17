"""Converts a torchvision ResNet state dict (.pth) into the .npz that model.pretrained reads.

Only this script needs torch (CPU build is enough); training does not:

  python scripts/convert_torchvision_resnet.py resnet50-11ad3fa6.pth resnet50.npz

The .npz keeps torchvision's key names and PyTorch layouts; the mapping to our
modules lives in ds2f_jax/models/pretrained.py. Checkpoints that wrap the state
dict ('state_dict' / 'model') or prefix its keys ('module.', 'backbone.') are
unwrapped. The classifier (fc.*) and BN step counters are dropped.
"""

import argparse
import os
import sys

import numpy as np

_WRAPPERS = ('state_dict', 'model')
_PREFIXES = ('module.', 'backbone.')
_DROPPED_PREFIXES = ('fc.',)
_DROPPED_SUFFIXES = ('num_batches_tracked',)


def state_dict_to_arrays(state) -> dict[str, np.ndarray]:
  """A torch state dict (name -> tensor) as float32 NumPy arrays, classifier dropped."""
  for key in _WRAPPERS:
    if key in state and isinstance(state[key], dict):
      state = state[key]
  out = {}
  for name, tensor in state.items():
    for prefix in _PREFIXES:
      if name.startswith(prefix):
        name = name[len(prefix):]
    if name.startswith(_DROPPED_PREFIXES) or name.endswith(_DROPPED_SUFFIXES):
      continue
    out[name] = tensor.detach().cpu().float().numpy()
  if 'conv1.weight' not in out:
    raise ValueError("no 'conv1.weight' in the state dict: not a torchvision ResNet")
  return out


def convert(src: str, dst: str) -> int:
  """Writes `dst` (.npz) from the .pth at `src`; returns the number of arrays written."""
  import torch  # pylint: disable=g-import-not-at-top  (optional dependency)
  if not os.path.isfile(src):
    raise FileNotFoundError(f'{src}: no such file')
  if not dst.endswith('.npz'):
    raise ValueError(f'{dst}: the output must end in .npz')
  arrays = state_dict_to_arrays(torch.load(src, map_location='cpu', weights_only=True))
  np.savez(dst, **arrays)
  return len(arrays)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('src', help='torchvision ResNet state dict (.pth)')
  parser.add_argument('dst', help='output .npz for model.pretrained')
  args = parser.parse_args(argv)
  n = convert(args.src, args.dst)
  print(f'wrote {n} arrays to {args.dst}')


if __name__ == '__main__':
  sys.exit(main())
