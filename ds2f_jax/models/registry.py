"""model.name -> model; validation of the model config against the method's limits."""

import os

import jax
import jax.numpy as jnp

from ds2f_jax.models import deeplab, ds2f, unet

# Per family: smallest LR side, smallest training batch, extra config checks.
_MIN_LR_SIDE = {}
_MIN_TRAIN_BATCH = {}
_VALIDATORS = {}
_BUILDERS = {}


def register(name, builder, min_lr_side, min_train_batch=1, validate_fn=None):
  """Adds a model family: builder(model_cfg, dtype, remat) -> DS2F keyword arguments.

  validate_fn(model_cfg) raises ValueError / FileNotFoundError on family-specific
  settings it cannot build.
  """
  _BUILDERS[name] = builder
  _MIN_LR_SIDE[name] = min_lr_side
  _MIN_TRAIN_BATCH[name] = min_train_batch
  _VALIDATORS[name] = validate_fn


def _unet(cfg, dtype, remat):
  kw = dict(width=cfg.width, dtype=dtype, remat=remat)
  return dict(encoder=unet.UNetEncoder(**kw), seg_decoder=unet.UNetDecoder(**kw),
              sr_decoder=unet.UNetDecoder(**kw), align_corners=True)


def _validate_unet(cfg):
  if cfg.get('pretrained', ''):
    raise ValueError(f'model.pretrained={cfg.pretrained!r}: pretrained weights exist only for '
                     'the ResNet backbone of ds2f_deeplabv3plus; use model.pretrained=""')


def _deeplab(cfg, dtype, remat):
  enc = deeplab.DeepLabEncoder(cfg.backbone, cfg.output_stride, dtype=dtype, remat=remat)
  return dict(encoder=enc, seg_decoder=deeplab.DeepLabDecoder(dtype=dtype, remat=remat),
              sr_decoder=deeplab.DeepLabDecoder(dtype=dtype, remat=remat), align_corners=False)


def _validate_deeplab(cfg):
  if cfg.backbone not in deeplab.RESNET_DEPTHS:
    raise ValueError(f'model.backbone={cfg.backbone!r} is not one of '
                     f'{sorted(deeplab.RESNET_DEPTHS)}')
  if cfg.output_stride not in deeplab.OUTPUT_STRIDES:
    raise ValueError(f'model.output_stride={cfg.output_stride} is not one of '
                     f'{sorted(deeplab.OUTPUT_STRIDES)}')
  if cfg.pretrained and not os.path.isfile(cfg.pretrained):
    raise FileNotFoundError(f'model.pretrained={cfg.pretrained!r}: no such file')


register('ds2f_unet', _unet, min_lr_side=16, validate_fn=_validate_unet)
# 128: the official limit (CAGL's 32x32 kernel on the stride-4 map). CrossGL has no
# such limit, but keeping it means every accepted size runs in the reference code.
# Batch >= 2: ASPP's image-pool BN sees one value per channel and image.
register('ds2f_deeplabv3plus', _deeplab, min_lr_side=128, min_train_batch=2,
         validate_fn=_validate_deeplab)


def validate(cfg):
  """One-line errors for model settings the method cannot run with."""
  if cfg.name not in _BUILDERS:
    raise ValueError(f'model.name={cfg.name!r} is unknown; choose one of {sorted(_BUILDERS)}')
  if cfg.num_classes < 2:
    raise ValueError(f'model.num_classes={cfg.num_classes}: binary tasks use 2 classes with '
                     'softmax CE (docs/method.md D7); 1 is not supported')
  if int(cfg.upscale) != cfg.upscale or cfg.upscale < 1:
    raise ValueError(f'model.upscale={cfg.upscale} must be a positive integer')
  if cfg.variant not in ds2f.VARIANTS:
    raise ValueError(f'model.variant={cfg.variant!r} is unknown; choose one of {ds2f.VARIANTS}')
  if cfg.width < 1:
    raise ValueError(f'model.width={cfg.width} must be positive')
  if _VALIDATORS[cfg.name] is not None:
    _VALIDATORS[cfg.name](cfg)


def min_lr_side(cfg) -> int:
  """Smallest LR height and width the encoder of `cfg.name` accepts."""
  return _MIN_LR_SIDE[cfg.name]


def check_input_size(cfg, lr_size):
  """Rejects LR inputs too small for the encoder, naming the size and the minimum."""
  m = _MIN_LR_SIDE[cfg.name]
  if min(lr_size) < m:
    raise ValueError(f'LR input {tuple(lr_size)} is too small for model.name={cfg.name!r}: each '
                     f'side must be >= {m} (HR = LR x model.upscale={cfg.upscale})')


def check_batch_size(cfg, batch_size):
  """Rejects training batches too small for the model's BatchNorms, naming batch_size."""
  m = _MIN_TRAIN_BATCH[cfg.name]
  if batch_size < m:
    raise ValueError(f'batch_size={batch_size} is too small for model.name={cfg.name!r}: '
                     f'training needs >= {m} images per step (BatchNorm over a 1x1 map)')


def create_model(cfg, dtype='float32', remat=False) -> ds2f.DS2F:
  validate(cfg)
  dtype = jnp.dtype(dtype)
  return ds2f.DS2F(
      **_BUILDERS[cfg.name](cfg, dtype, remat), num_classes=cfg.num_classes,
      in_channels=cfg.in_channels, upscale=int(cfg.upscale), variant=cfg.variant,
      sfem_hidden=cfg.sfem_hidden, rcab_global_pool=cfg.rcab_global_pool, dtype=dtype)


def inference_variables(model, variables, lr_shape=(1, 64, 64, 3)):
  """The subset of `variables` the inference path uses (no SR stream, no SFEM)."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(lr_shape), train=False))

  def keep(full, ref):
    return {k: keep(full[k], v) if isinstance(v, dict) else full[k] for k, v in ref.items()}

  return keep(variables, shapes)
