"""The DeepLabV3+ encoder and decoder of DS2F-DeepLabV3+ (docs/method.md §DeepLabV3+, D4).

Encoder = ResNet v1.5 backbone + ASPP, shared by both streams; it returns the
stride-4 low-level features and the ASPP output. Each stream has its own
DeepLabV3+ decoder. Module names inside the backbone mirror torchvision's
(`layer1_0/conv1` = `layer1.0.conv1`) so that ImageNet weights map one to one.
"""

import functools

import flax.linen as nn
import jax.numpy as jnp

from ds2f_jax.models.layers import Conv, ConvBNAct, batch_norm, max_pool_3x3_s2, resize_bilinear

# Bottleneck blocks per stage.
RESNET_DEPTHS = {'resnet50': (3, 4, 6, 3), 'resnet101': (3, 4, 23, 3)}
# output_stride -> stage strides and ASPP rates. The official "OS8" leaves layer3
# undilated (docs/method.md §DeepLabV3+); both settings dilate layer4 by 2 x multi-grid.
OUTPUT_STRIDES = {8: ((1, 2, 1, 1), (12, 24, 36)), 16: ((1, 2, 2, 1), (6, 12, 18))}
STAGE_DILATIONS = (1, 1, 1, 2)
MULTI_GRID = (1, 2, 4)  # Per-block factors of layer4's dilation: 2, 4, 8.

# The official backbone init, kaiming_uniform_(a=0): U(+-sqrt(6 / fan_in)).
resnet_kernel_init = nn.initializers.variance_scaling(2.0, 'fan_in', 'uniform')


class Bottleneck(nn.Module):
  """ResNet v1.5 bottleneck: the stride sits on the 3x3 conv, whose padding = dilation."""
  planes: int
  stride: int = 1
  dilation: int = 1
  downsample: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    conv = functools.partial(Conv, dtype=self.dtype, kernel_init=resnet_kernel_init)
    bn = functools.partial(batch_norm, train, self.dtype)
    y = nn.relu(bn('bn1')(conv(self.planes, 1, name='conv1')(x)))
    y = conv(self.planes, 3, self.stride, dilation=self.dilation, name='conv2')(y)
    y = nn.relu(bn('bn2')(y))
    y = bn('bn3')(conv(self.planes * 4, 1, name='conv3')(y))
    if self.downsample:
      x = bn('downsample_bn')(conv(self.planes * 4, 1, self.stride, name='downsample_conv')(x))
    return nn.relu(y + x)


class ResNet(nn.Module):
  """ResNet-50/101 v1.5 without the classifier; returns (layer1 output, layer4 output)."""
  depth: str = 'resnet50'
  output_stride: int = 8
  dtype: jnp.dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, x, train: bool):
    if self.depth not in RESNET_DEPTHS:
      raise ValueError(f'model.backbone={self.depth!r} is not one of {sorted(RESNET_DEPTHS)}')
    if self.output_stride not in OUTPUT_STRIDES:
      raise ValueError(f'model.output_stride={self.output_stride} is not one of '
                       f'{sorted(OUTPUT_STRIDES)}')
    # `train` is argument 2 of Bottleneck.__call__(self, x, train).
    block = nn.remat(Bottleneck, static_argnums=(2,)) if self.remat else Bottleneck
    x = Conv(64, 7, 2, dtype=self.dtype, kernel_init=resnet_kernel_init, name='conv1')(x)
    x = max_pool_3x3_s2(nn.relu(batch_norm(train, self.dtype, 'bn1')(x)))
    strides, _ = OUTPUT_STRIDES[self.output_stride]
    low = None
    for i, n_blocks in enumerate(RESNET_DEPTHS[self.depth]):
      for b in range(n_blocks):
        dilation = STAGE_DILATIONS[i] * (MULTI_GRID[b % len(MULTI_GRID)] if i == 3 else 1)
        x = block(64 * 2**i, strides[i] if b == 0 else 1, dilation, downsample=b == 0,
                  dtype=self.dtype, name=f'layer{i + 1}_{b}')(x, train)
      if i == 0:
        low = x
    return low, x


class ASPP(nn.Module):
  """1x1 | three dilated 3x3 | image pool, each conv-BN-ReLU; 1x1 projection, then BN-ReLU twice.

  The image-pool BN normalises N values per channel, so training needs a batch of
  at least 2 (registry.check_batch_size).
  """
  rates: tuple[int, ...]
  features: int = 256
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    f = self.features
    outs = [ConvBNAct(f, 1, dtype=self.dtype, name='branch0')(x, train)]
    for i, rate in enumerate(self.rates, start=1):
      outs.append(ConvBNAct(f, 3, dilation=rate, dtype=self.dtype, name=f'branch{i}')(x, train))
    # Bilinear resize (align_corners=False) of a 1x1 map is a broadcast.
    pooled = jnp.mean(x, axis=(1, 2), keepdims=True)
    pooled = ConvBNAct(f, 1, dtype=self.dtype, name='image_pool')(pooled, train)
    outs.append(jnp.broadcast_to(pooled, x.shape[:-1] + (f,)))
    y = ConvBNAct(f, 1, dtype=self.dtype, name='project')(jnp.concatenate(outs, -1), train)
    return nn.relu(batch_norm(train, self.dtype, 'project_bn2')(y))


class DeepLabEncoder(nn.Module):
  """Backbone + ASPP. Returns (low-level features at stride 4, ASPP output)."""
  backbone: str = 'resnet50'
  output_stride: int = 8
  dtype: jnp.dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, x, train: bool):
    low, high = ResNet(self.backbone, self.output_stride, self.dtype, self.remat,
                       name='backbone')(x, train)
    rates = OUTPUT_STRIDES[self.output_stride][1]
    return low, ASPP(rates, dtype=self.dtype, name='aspp')(high, train)


class DeepLabDecoder(nn.Module):
  """conv_low (1x1 -> 48, bias, no BN) ++ upsampled ASPP, then two 3x3 conv-BN-ReLU at stride 4."""
  features: int = 256
  low_features: int = 48
  dtype: jnp.dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, feats, train: bool):
    low, high = feats
    low = Conv(self.low_features, 1, use_bias=True, dtype=self.dtype, name='conv_low')(low)
    high = resize_bilinear(high, low.shape[1:3], align_corners=False)
    y = jnp.concatenate([low, high.astype(low.dtype)], axis=-1)
    # `train` is argument 2 of ConvBNAct.__call__(self, x, train).
    block = nn.remat(ConvBNAct, static_argnums=(2,)) if self.remat else ConvBNAct
    y = block(self.features, 3, dtype=self.dtype, name='conv1')(y, train)
    return block(self.features, 3, dtype=self.dtype, name='conv2')(y, train)
