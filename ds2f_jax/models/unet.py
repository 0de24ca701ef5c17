"""The UNet encoder and decoder of DS2F-UNet (docs/method.md §UNet)."""

import flax.linen as nn
import jax.numpy as jnp

from ds2f_jax.models.layers import ConvBNAct, max_pool_3x3_s2, resize_bilinear


class DoubleConv(nn.Module):
  """[3x3 conv (no bias) -> BN -> ReLU] x 2, middle width = out."""
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = ConvBNAct(self.features, 3, dtype=self.dtype)(x, train)
    return ConvBNAct(self.features, 3, dtype=self.dtype)(x, train)


class Up(nn.Module):
  """Upsample block: align-corners resize to the skip, 1x1 conv-BN-ReLU, [up, skip], DoubleConv."""
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, skip, train: bool):
    x = resize_bilinear(x, skip.shape[1:3], align_corners=True)
    x = ConvBNAct(self.features, 1, dtype=self.dtype)(x, train)
    x = jnp.concatenate([x, skip.astype(x.dtype)], axis=-1)
    return DoubleConv(self.features, self.dtype)(x, train)


def _blocks(remat: bool):
  if not remat:
    return DoubleConv, Up
  # `train` is static: argument 2 of DoubleConv (self, x, train), 3 of Up.
  return nn.remat(DoubleConv, static_argnums=(2,)), nn.remat(Up, static_argnums=(3,))


class UNetEncoder(nn.Module):
  """Four Downsample stages (DoubleConv, 3x3/s2 max-pool) and the bottleneck.

  Returns (down1_f, down2_f, down3_f, down4_f, down5): the skips, then the bottleneck.
  """
  width: int = 64
  dtype: jnp.dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, x, train: bool):
    double, _ = _blocks(self.remat)
    feats = []
    for i in range(4):
      f = double(self.width * 2**i, self.dtype, name=f'down{i + 1}')(x, train)
      feats.append(f)
      x = max_pool_3x3_s2(f)
    feats.append(double(self.width * 16, self.dtype, name='down5')(x, train))
    return tuple(feats)


class UNetDecoder(nn.Module):
  """up6..up9 from the bottleneck through the skips; the SR stream is a second instance."""
  width: int = 64
  dtype: jnp.dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, feats, train: bool):
    _, up = _blocks(self.remat)
    *skips, x = feats
    for i, skip in enumerate(reversed(skips)):
      x = up(self.width * 2**(3 - i), self.dtype, name=f'up{6 + i}')(x, skip, train)
    return x
