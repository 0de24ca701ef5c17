"""DS2F assembly: shared encoder, segmentation and SR streams, task heads, SFEM.

The architecture-specific parts (encoder, decoders) come in as modules, so the
UNet and DeepLabV3+ variants share one definition of the streams, the proxy task
and the train/inference split (docs/method.md §Architecture, D2-D3).
"""

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ds2f_jax.models.layers import Conv, SRHead, resize_bilinear
from ds2f_jax.models.mscg import CrossGL

# ds2f: the method. ds2f_after: SFEM on the HR outputs (official before=False).
# dual_stream: SR stream + SR loss, no SFEM. seg_only / seg_hr: the segmentation
# network alone, on the LR or the full-resolution input (no x r upsampling).
VARIANTS = ('ds2f', 'ds2f_after', 'dual_stream', 'seg_only', 'seg_hr')
SEG_ONLY_VARIANTS = ('seg_only', 'seg_hr')


def _at_least_f32(t):
  """bfloat16 outputs leave as float32; float64 (parity tests) stays float64."""
  return t.astype(jnp.promote_types(t.dtype, jnp.float32))


class TrainOutputs(NamedTuple):
  """Train-mode outputs in the official order; absent terms of a variant are None."""
  out: jax.Array
  sr: jax.Array | None = None
  fusion_seg: jax.Array | None = None
  fusion_sr: jax.Array | None = None


class DS2F(nn.Module):
  """Dual-stream SR segmentation. Inference returns HR logits from the seg path only.

  `with_sr=True` at inference (train=False) also runs the SR stream, BatchNorm in
  inference mode, and returns TrainOutputs(out, sr) (sr None for seg-only
  variants): for SR-quality reports and visualisation, never for deployment.
  """
  encoder: nn.Module
  seg_decoder: nn.Module
  sr_decoder: nn.Module
  num_classes: int = 2
  in_channels: int = 3  # Channels of the image, hence of the SR reconstruction.
  upscale: int = 2
  variant: str = 'ds2f'
  sfem_hidden: int = 32
  rcab_global_pool: bool = False
  align_corners: bool = True  # Of the final x r logits upsampling (UNet: True).
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, with_sr: bool = False):
    lr_size = x.shape[1:3]
    r = 1 if self.variant in SEG_ONLY_VARIANTS else self.upscale
    hr_size = (lr_size[0] * r, lr_size[1] * r)
    x = x.astype(self.dtype)
    feats = self.encoder(x, train)
    f_seg = self.seg_decoder(feats, train)
    out_conv = Conv(self.num_classes, 1, use_bias=True, dtype=self.dtype, name='out_conv')

    def to_lr(f):  # DeepLab decoders run at stride 4; the UNet's already at LR.
      return f if f.shape[1:3] == lr_size else resize_bilinear(f, lr_size, False)

    def seg_head(f):
      return resize_bilinear(to_lr(out_conv(f)), hr_size, self.align_corners)

    out = _at_least_f32(seg_head(f_seg))
    if not train and not with_sr:
      return out
    if self.variant in SEG_ONLY_VARIANTS:
      return TrainOutputs(out)

    f_sr = self.sr_decoder(feats, train)
    sr_head = SRHead(self.upscale, self.in_channels, dtype=self.dtype, name='sr_head')
    sr = sr_head(to_lr(f_sr))
    if not train or self.variant == 'dual_stream':
      return TrainOutputs(out, _at_least_f32(sr))

    sfem = CrossGL(self.sfem_hidden, self.rcab_global_pool, self.dtype, name='sfem')
    if self.variant == 'ds2f':
      g_sr, g_seg = sfem(f_sr, f_seg, train)
      fusion_sr, fusion_seg = sr_head(to_lr(g_sr)), seg_head(g_seg)
    elif self.variant == 'ds2f_after':
      fusion_sr, fusion_seg = sfem(sr, out, train)
    else:
      raise ValueError(f'model.variant={self.variant!r} is not one of {VARIANTS}')
    f32 = _at_least_f32
    return TrainOutputs(out, f32(sr), f32(fusion_seg), f32(fusion_sr))
