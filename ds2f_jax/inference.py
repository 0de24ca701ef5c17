"""A trained model for inference: restore from a workdir, run LR -> HR probabilities.

Shared by `--mode eval`, `--mode predict` and the TensorBoard panels of
training. Inference follows spec section 5.2: the image at its original size
is bicubic-resized to the LR input (data.hr_size / r, whatever the original
size, so one program serves every image), normalised to [-1, 1], run with
BatchNorm in inference mode, and the softmax of the HR logits is resized back
to the original size with PyTorch-style 'nearest'. The segmentation-only
baselines follow the same steps at their own size (decision 9.14): seg_only
predicts at LR and seg_hr takes the HR-size input, and either's probabilities
are nearest-resized to the original size.
"""

from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from ds2f_jax import augment, checkpointing, input_pipeline, metrics
from ds2f_jax.models import registry
from ds2f_jax.models.ds2f import SEG_ONLY_VARIANTS


class Restored(NamedTuple):
  model: Any
  variables: dict  # {'params', 'batch_stats'}: only what inference reads.
  step: int
  checkpoint_dir: str


def lr_size(config) -> tuple[int, int]:
  """(height, width) of the network input: data.hr_size / model.upscale (LR).

  The seg_hr baseline takes data.hr_size itself; its output, like seg_only's,
  is at the input size and reaches the original size by the nearest resize of
  the probabilities (decision 9.14).
  """
  r = int(config.model.upscale)
  size = input_pipeline.io_sizes(config.data.hr_size, r, config.model.variant)[0]
  registry.check_input_size(config.model, size)
  return size


def create_model(config):
  """The configured model (remat is a training-memory option; inference skips it)."""
  registry.validate(config.model)
  return registry.create_model(config.model, dtype=config.dtype, remat=False)


def restore(config, workdir: str, which='best', with_sr: bool = False) -> Restored:
  """Restores `which` (best | latest | a step) from WORKDIR/checkpoints.

  Only the variables of the inference graph are read from disk (orbax partial
  restore): no optimiser state, no MSCG, and no SR stream unless `with_sr`.
  """
  model = create_model(config)
  if with_sr and config.model.variant in SEG_ONLY_VARIANTS:
    raise ValueError(f'eval.sr_metrics=True needs an SR stream; model.variant='
                     f'{config.model.variant!r} has none')
  workdir = os.path.abspath(workdir)
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f'workdir {workdir} does not exist: train first (--mode train)')
  if not os.path.isdir(ckpt_dir) or not os.listdir(ckpt_dir):
    raise FileNotFoundError(f'no checkpoint in workdir {workdir} (checkpoints/ is missing or '
                            'empty): train first (--mode train)')
  mngr = checkpointing.create_manager(workdir, config.keep_checkpoints, read_only=True)
  try:
    step = checkpointing.resolve_step(mngr, which)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device),
        variable_shapes(config, model, with_sr))
    args = ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True)
    try:
      variables = mngr.restore(step, args=ocp.args.Composite(state=args))['state']
    except (ValueError, KeyError) as e:
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise ValueError(f'checkpoint {ckpt_dir}/{step} does not fit this config (model.* must '
                       f'match the training run): {first}') from None
  finally:
    mngr.close()
  logging.info('Restored step %d from %s.', step, ckpt_dir)
  return Restored(model, variables, int(step), ckpt_dir)


def variable_shapes(config, model, with_sr: bool = False) -> dict:
  """{'params', 'batch_stats'} shapes of the inference graph (with the SR stream if asked)."""
  h, w = lr_size(config)
  x = jax.ShapeDtypeStruct((1, h, w, config.model.in_channels), jnp.float32)
  shapes = jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, train=False, with_sr=with_sr), x)
  return {'params': shapes['params'], 'batch_stats': shapes.get('batch_stats', {})}


def select_variables(config, model, variables, with_sr: bool = False) -> dict:
  """The inference subset of training variables, on one device (as `restore` gives it).

  Same tree and placement as a restored model, so both share one compiled program.
  """
  def keep(full, ref):
    return {k: keep(full[k], v) if isinstance(v, dict) else full[k] for k, v in ref.items()}

  return jax.device_put(keep(variables, variable_shapes(config, model, with_sr)),
                        jax.local_devices()[0])


@functools.partial(jax.jit, static_argnames=('model', 'with_sr'))
def _probs(model, variables, lr, with_sr):
  if with_sr:
    outs = model.apply(variables, lr, train=False, with_sr=True)
    return jax.nn.softmax(outs.out, axis=-1), outs.sr
  return jax.nn.softmax(model.apply(variables, lr, train=False), axis=-1), None


def predict_probs(model, variables, lr, with_sr: bool = False):
  """(N, h, w, 3) LR in [-1, 1] -> HR softmax (N, H, W, C) and SR (N, H, W, 3) or None.

  Jitted once per (model, input shape, with_sr); BatchNorm in inference mode,
  so padding a batch does not change the other images.
  """
  return _probs(model, variables, jnp.asarray(lr, jnp.float32), with_sr=with_sr)


def lr_input(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """uint8 RGB at any size -> the normalised float32 LR input (bicubic, as training)."""
  return input_pipeline.normalise(augment.resize_bicubic(np.asarray(image, np.uint8), size))


def resize_nearest(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """(h, w, ...) -> (H, W, ...) on the host, the same rule as metrics.nearest_resize_probs."""
  rows = metrics.legacy_nearest_indices(maps.shape[0], int(size[0]))
  cols = metrics.legacy_nearest_indices(maps.shape[1], int(size[1]))
  return maps[rows][:, cols]


def chunks(items, batch_size: int):
  """Groups an iterable into lists of at most `batch_size` (the last may be short)."""
  chunk = []
  for item in items:
    chunk.append(item)
    if len(chunk) == batch_size:
      yield chunk
      chunk = []
  if chunk:
    yield chunk


def stack_padded(arrays, batch_size: int) -> np.ndarray:
  """Stacks equal-shaped arrays and pads with zeros to `batch_size` (one compile)."""
  batch = np.zeros((batch_size,) + arrays[0].shape, arrays[0].dtype)
  batch[:len(arrays)] = np.stack(arrays)
  return batch
