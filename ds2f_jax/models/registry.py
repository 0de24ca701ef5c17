"""model.name -> model; validation of the model config against the method's limits."""

import jax
import jax.numpy as jnp

from ds2f_jax.models import ds2f, unet

# Smallest LR side each encoder accepts (UNet: four 2x poolings leave >= 1 pixel).
_MIN_LR_SIDE = {'ds2f_unet': 16}


def _unet(cfg, dtype, remat):
  kw = dict(width=cfg.width, dtype=dtype, remat=remat)
  return dict(encoder=unet.UNetEncoder(**kw), seg_decoder=unet.UNetDecoder(**kw),
              sr_decoder=unet.UNetDecoder(**kw), align_corners=True)


_BUILDERS = {'ds2f_unet': _unet}


def register(name, builder, min_lr_side):
  """Adds a model family: builder(model_cfg, dtype, remat) -> DS2F keyword arguments."""
  _BUILDERS[name] = builder
  _MIN_LR_SIDE[name] = min_lr_side


def validate(cfg):
  """One-line errors for model settings the method cannot run with."""
  if cfg.name not in _BUILDERS:
    raise ValueError(f'model.name={cfg.name!r} is unknown; choose one of {sorted(_BUILDERS)}')
  if cfg.num_classes < 2:
    raise ValueError(f'model.num_classes={cfg.num_classes}: binary tasks use 2 classes with '
                     'softmax CE (decision 9.7); 1 is not supported')
  if int(cfg.upscale) != cfg.upscale or cfg.upscale < 1:
    raise ValueError(f'model.upscale={cfg.upscale} must be a positive integer')
  if cfg.variant not in ds2f.VARIANTS:
    raise ValueError(f'model.variant={cfg.variant!r} is unknown; choose one of {ds2f.VARIANTS}')
  if cfg.width < 1:
    raise ValueError(f'model.width={cfg.width} must be positive')


def min_lr_side(cfg) -> int:
  """Smallest LR height and width the encoder of `cfg.name` accepts."""
  return _MIN_LR_SIDE[cfg.name]


def check_input_size(cfg, lr_size):
  """Rejects LR inputs too small for the encoder, naming the size and the minimum."""
  m = _MIN_LR_SIDE[cfg.name]
  if min(lr_size) < m:
    raise ValueError(f'LR input {tuple(lr_size)} is too small for model.name={cfg.name!r}: each '
                     f'side must be >= {m} (HR = LR x model.upscale={cfg.upscale})')


def create_model(cfg, dtype='float32', remat=False) -> ds2f.DS2F:
  validate(cfg)
  dtype = jnp.dtype(dtype)
  return ds2f.DS2F(
      **_BUILDERS[cfg.name](cfg, dtype, remat), num_classes=cfg.num_classes,
      upscale=int(cfg.upscale), variant=cfg.variant, sfem_hidden=cfg.sfem_hidden,
      rcab_global_pool=cfg.rcab_global_pool, dtype=dtype)


def inference_variables(model, variables, lr_shape=(1, 64, 64, 3)):
  """The subset of `variables` the inference path uses (no SR stream, no SFEM)."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(lr_shape), train=False))

  def keep(full, ref):
    return {k: keep(full[k], v) if isinstance(v, dict) else full[k] for k, v in ref.items()}

  return keep(variables, shapes)
