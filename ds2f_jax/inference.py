"""A trained model for inference: restore from a workdir, run LR -> HR probabilities.

The one inference core of `--mode eval`, `--mode predict`, `--mode export`, the
ablation driver and the TensorBoard panels of training: the model without
training options, the partial restore of a checkpoint (checked against
W/config.json and for finite parameters), and the class names.

Inference follows docs/method.md §Evaluation protocols: the image at its original size is
bicubic-resized to the LR input (data.hr_size / r, whatever the original
size, so one program serves every image), normalised to [-1, 1], run with
BatchNorm in inference mode, and the softmax of the HR logits is resized back
to the original size with PyTorch-style 'nearest'. The segmentation-only
baselines follow the same steps at their own size (docs/method.md D14): seg_only
predicts at LR and seg_hr takes the HR-size input, and either's probabilities
are nearest-resized to the original size.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ds2f_jax import checkpointing, imaging, input_pipeline
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
  the probabilities (docs/method.md D14).
  """
  size = imaging.input_size(config)
  registry.check_input_size(config.model, size)
  return size


def check_config(config) -> None:
  """The model part of train.validate_config, for the modes that do not import train."""
  registry.validate(config.model)
  hr, r = tuple(config.data.hr_size), config.model.upscale
  if len(hr) != 2 or any(int(s) != s or s < 1 for s in hr):
    raise ValueError(f'data.hr_size={hr} must be (height, width) in pixels')
  if hr[0] % r or hr[1] % r:
    raise ValueError(f'data.hr_size={hr} is not divisible by model.upscale={r}')
  lr_size(config)
  if config.dtype not in ('float32', 'bfloat16'):
    raise ValueError(f"dtype={config.dtype!r} must be 'float32' or 'bfloat16'")


def create_model(config):
  """The configured model (remat is a training-memory option; inference skips it)."""
  registry.validate(config.model)
  return registry.create_model(config.model, dtype=config.dtype, remat=False)


# Keys that define the network or how its input is made. A checkpoint restores
# under another upscale, variant, hr_size or dtype (the shapes agree) and then
# scores a model that was never trained; eval, predict and export therefore
# refuse a config that differs from W/config.json on any of them. Refused, not
# taken from the workdir: the command line keeps meaning what it says, and the
# line names the override to drop.
MODEL_KEYS = ('model.name', 'model.variant', 'model.upscale', 'model.num_classes',
              'model.width', 'data.hr_size', 'dtype')
CONFIG_FILE = 'config.json'


def _get(tree: dict, key: str):
  for part in key.split('.'):
    if not isinstance(tree, dict) or part not in tree:
      return None
    tree = tree[part]
  return tree


def plain_config(config) -> dict:
  """The config as W/config.json holds it (tuples as lists)."""
  return json.loads(json.dumps(config.to_dict(), default=list))


def check_trained_config(config, workdir: str) -> None:
  """One-line error if `config` differs from W/config.json on a MODEL_KEYS key."""
  path = os.path.join(os.path.abspath(workdir), CONFIG_FILE)
  if not os.path.exists(path):  # Workdirs written before config.json existed.
    return
  try:
    with open(path, encoding='utf-8') as f:
      trained = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f'{path} cannot be read ({e}); it records the config the workdir was '
                     'trained with') from None
  if not isinstance(trained, dict):
    raise ValueError(f'{path} is not a config (a JSON object)')
  mine = plain_config(config)
  differ = [(key, _get(mine, key), _get(trained, key)) for key in MODEL_KEYS
            if _get(trained, key) is not None and _get(trained, key) != _get(mine, key)]
  if differ:
    key, new, old = differ[0]
    more = ''.join(f'; also {k}={n!r}, trained with {o!r}' for k, n, o in differ[1:])
    raise ValueError(f'{key}={new!r} but {workdir} was trained with {key}={old!r} '
                     f'({path}){more}; drop the override or use the config it was trained '
                     'with')


def class_names(config) -> list[str]:
  """One rule for eval, predict and export: the dataset builder's CLASS_NAMES when
  they fit model.num_classes, else class_<i> (also when no dataset is known)."""
  n = int(config.model.num_classes)
  try:
    names = getattr(input_pipeline.get_builder(config.data), 'CLASS_NAMES', None)
  except ValueError:  # Predict and export need no dataset.
    names = None
  if names is not None and len(names) == n:
    return [str(x) for x in names]
  logging.warning('Dataset %s names %s classes, model.num_classes=%d: using class_0..class_%d.',
                  config.data.name, 'no' if names is None else len(names), n, n - 1)
  return [f'class_{i}' for i in range(n)]


@jax.jit
def _finite(tree):
  return jax.tree_util.tree_map(lambda x: jnp.all(jnp.isfinite(x)), tree)


def check_finite(variables: dict, where: str) -> None:
  """Refuses variables holding NaN or Inf (a diverged run's checkpoint), naming the first."""
  flags = jax.device_get(_finite(variables))
  flat = jax.tree_util.tree_flatten_with_path(flags)[0]
  bad = ['/'.join(str(getattr(k, 'key', k)) for k in path) for path, ok in flat if not ok]
  if bad:
    raise ValueError(f'{where} holds non-finite parameters ({len(bad)} of {len(flat)} arrays '
                     f'hold NaN or Inf, first {bad[0]}): the run diverged before it was saved; '
                     'choose an earlier step or train again with a lower learning rate')


def restore(config, workdir: str, which='best', with_sr: bool = False) -> Restored:
  """Restores `which` (best | latest | a step) from WORKDIR/checkpoints.

  Only the variables of the inference graph are read from disk (orbax partial
  restore): no optimiser state, no MSCG, and no SR stream unless `with_sr`. The
  config must agree with W/config.json on MODEL_KEYS, and the parameters must
  be finite. Safe while a trainer deletes old steps (`checkpointing.read_step`).
  """
  check_config(config)
  model = create_model(config)
  if with_sr and config.model.variant in SEG_ONLY_VARIANTS:
    raise ValueError(f'eval.sr_metrics=True needs an SR stream; model.variant='
                     f'{config.model.variant!r} has none')
  workdir = os.path.abspath(workdir)
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  if not os.path.exists(workdir):
    raise FileNotFoundError(f'workdir {workdir} does not exist: train first (--mode train)')
  if not os.path.isdir(workdir) or os.path.isfile(ckpt_dir):
    what = workdir if not os.path.isdir(workdir) else ckpt_dir
    raise NotADirectoryError(f'{what} is a file, not a folder')
  if not os.path.isdir(ckpt_dir) or not os.listdir(ckpt_dir):
    raise FileNotFoundError(f'no checkpoint in workdir {workdir} (checkpoints/ is missing or '
                            'empty): train first (--mode train)')
  check_trained_config(config, workdir)
  target = variable_shapes(config, model, with_sr)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  mngr = checkpointing.create_manager(workdir, config.keep_checkpoints, read_only=True)
  try:
    step, variables = checkpointing.read_step(mngr, which, target, device)
  finally:
    mngr.close()
  check_finite(variables, f'checkpoint {ckpt_dir}/{step} (step {step})')
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
