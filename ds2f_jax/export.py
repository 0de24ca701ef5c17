"""`--mode export`: a training checkpoint -> W/export/, servable without this code base.

  python main.py --mode export --config configs/drive.py --workdir W \
      [--config.export.checkpoint=best|latest|STEP]

W/export/ holds the segmentation path only (no SR stream, no SFEM: inference
never runs them):

  params.msgpack      {'params', 'batch_stats'} of the inference path, flax msgpack
  params/             the same tree as an orbax checkpoint
  model.jax_exported  jax.export artifact: (variables, lr) -> HR probabilities,
                      lowered for cpu, cuda and tpu with symbolic batch, height
                      and width (each LR side >= the encoder's minimum; the
                      UNet needs no multiple)
  export_info.json    input convention, r, class names, versions, source step,
                      and the sha256 of every other file

`ds2f_jax.serving.Predictor` loads it with JAX and NumPy alone.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import shutil

import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from ds2f_jax import imaging, inference, serving
from ds2f_jax.models import registry

PLATFORMS = ('cpu', 'cuda', 'tpu')


def predict_fn(model):
  """(variables, lr in [-1, 1]) -> softmax probabilities at HR: what gets exported."""

  def predict(variables, lr):
    return jax.nn.softmax(model.apply(variables, lr, train=False), axis=-1)

  return predict


def export_lowered(model, variables, min_side: int) -> jax.export.Exported:
  """jax.export of predict_fn for PLATFORMS, batch/height/width symbolic (sides >= min_side)."""
  b, h, w = jax.export.symbolic_shape(
      'b, h, w', constraints=(f'h >= {min_side}', f'w >= {min_side}'))
  lr_spec = jax.ShapeDtypeStruct((b, h, w, 3), jnp.float32)
  var_spec = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), variables)
  return jax.export.export(jax.jit(predict_fn(model)), platforms=PLATFORMS)(var_spec, lr_spec)


def _version(package: str) -> str:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return 'not installed'


def _all_files(root: str) -> list[str]:
  out = []
  for dirpath, _, files in os.walk(root):
    out += [os.path.relpath(os.path.join(dirpath, f), root) for f in files]
  return sorted(out)


def export_info(config, step: int, which, exported: jax.export.Exported, min_side: int) -> dict:
  r = int(config.model.upscale)
  hr = [int(s) for s in config.data.hr_size]
  size_in, size_out = imaging.io_sizes(hr, r, config.model.variant)
  return {
      'format': serving.FORMAT,
      'format_version': serving.FORMAT_VERSION,
      'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'model': {k: config.model[k] for k in ('name', 'variant', 'width', 'num_classes')}
               | {'upscale': r, 'dtype': config.dtype},
      'input': {
          'layout': 'NHWC', 'dtype': 'float32', 'channels': 'RGB',
          'normalisation': 'x / 255 * 2 - 1 (uint8 RGB -> [-1, 1])',
          'lr_size': list(size_in),
          'min_lr_side': min_side,
          'size_multiple': 1,
          'lr_resize': 'bicubic from the original image, OpenCV INTER_CUBIC semantics '
                       '(a = -0.75, half-pixel centres, no antialiasing), rounded to uint8',
      },
      'output': {
          'what': 'softmax class probabilities, float32',
          'shape': ('(batch, height, width, num_classes) at the input size'
                    if config.model.variant in imaging.SEG_INPUT else
                    '(batch, lr_height * upscale, lr_width * upscale, num_classes)'),
          'hr_size': hr,
          'size': list(size_out),
          'to_original_size': 'nearest: src = floor(dst * in / out) in exact integers '
                              '(OpenCV INTER_NEAREST); mask = argmax over classes',
      },
      'convention': (f'Training pairs: HR = bicubic(original -> data.hr_size {hr}), LR = '
                     f'bicubic(original -> hr_size / {r}); the model maps LR to logits at '
                     f'LR x {r}. Serving resizes any image to lr_size and maps the HR output '
                     'back to the image size.'),
      'class_names': inference.class_names(config),
      'signature': {
          'call': 'exported.call(variables, lr) with variables = params.msgpack tree',
          'platforms': list(exported.platforms),
          'symbolic_shape': '(b, h, w, 3)',
          'constraints': [f'h >= {min_side}', f'w >= {min_side}'],
          'calling_convention_version': exported.calling_convention_version,
      },
      'versions': {
          'jax': jax.__version__, 'jaxlib': _version('jaxlib'), 'flax': flax.__version__,
          'orbax-checkpoint': _version('orbax-checkpoint'), 'numpy': np.__version__,
          'python': platform.python_version(),
          'note': 'serving needs a jax at least as new as this one',
      },
      'checkpoint': {'step': int(step), 'selected_by': str(which)},
  }


def export(config, workdir: str) -> str:
  """Writes workdir/export (replacing an older export only when the new one is
  complete) and returns its path."""
  if jax.process_count() > 1:
    raise ValueError(f'--mode export runs in one process, not {jax.process_count()}: start it '
                     'without the multi-host environment (it needs no accelerator)')
  workdir = os.path.abspath(workdir)
  which = str(config.export.checkpoint)
  if which not in ('best', 'latest') and not which.isdigit():
    raise ValueError(f'export.checkpoint={which!r}: use best, latest or a step number')
  restored = inference.restore(config, workdir, which)
  model, step = restored.model, restored.step
  variables = jax.tree_util.tree_map(np.asarray, jax.device_get(restored.variables))
  min_side = registry.min_lr_side(config.model)
  exported = export_lowered(model, variables, min_side)

  final = os.path.join(workdir, 'export')
  tmp = f'{final}.tmp-{os.getpid()}'
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  try:
    with open(os.path.join(tmp, serving.PARAMS_FILE), 'wb') as f:
      f.write(flax.serialization.msgpack_serialize(variables))
    with open(os.path.join(tmp, serving.EXPORTED_FILE), 'wb') as f:
      f.write(exported.serialize())
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(os.path.join(tmp, serving.PARAMS_CHECKPOINT), variables)
    ckptr.wait_until_finished()
    ckptr.close()
    info = export_info(config, step, which, exported, min_side)
    info['files'] = {f: serving.sha256_file(os.path.join(tmp, f)) for f in _all_files(tmp)}
    with open(os.path.join(tmp, serving.INFO_FILE), 'w', encoding='utf-8') as f:
      json.dump(info, f, indent=2)
    old = f'{final}.old-{os.getpid()}'
    if os.path.exists(final):
      os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  n = sum(x.size for x in jax.tree_util.tree_leaves(variables['params']))
  logging.info('Exported step %d (%s) of %s: %d inference parameters -> %s', step, which,
               workdir, n, final)
  return final
