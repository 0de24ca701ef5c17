"""Shared Feature Extraction Module: MSCG = CrossGL(Gate(RCAB -> MSConv)), docs/method.md §MSCG.

Training only: its outputs go back through the shared task heads (the proxy task),
so it shapes the encoder and heads through gradients and never runs at inference.
"""

import flax.linen as nn
import jax.numpy as jnp

from ds2f_jax.models.layers import Conv, batch_norm, broadcast_f32, gelu


class RCAB(nn.Module):
  """Two bias-ful depthwise 3x3 convs, then a sigmoid gate from a 1x1 MLP.

  The official code (91776aa) has no global pooling, so the gate is per pixel;
  `global_pool=True` restores the earlier SE-style channel attention (docs/method.md D1).
  """
  reduction: int = 4
  global_pool: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    ch = x.shape[-1]
    t = Conv(ch, 3, groups=ch, use_bias=True, dtype=self.dtype)(x)
    t = Conv(ch, 3, groups=ch, use_bias=True, dtype=self.dtype)(t)
    s = jnp.mean(t, axis=(1, 2), keepdims=True) if self.global_pool else t
    s = Conv(ch // self.reduction, 1, use_bias=True, dtype=self.dtype)(s)
    s = nn.leaky_relu(s, 0.01)
    s = nn.sigmoid(Conv(ch, 1, use_bias=True, dtype=self.dtype)(s))
    if self.global_pool:  # (N, 1, 1, C) gate: its gradient sums over pixels, in float32.
      return (broadcast_f32(s, t.shape) * t).astype(t.dtype) + x
    return s * t + x


class MSConv(nn.Module):
  """Multi-scale conv over contiguous channel chunks: 1x1 | dw d=1 .. d=g-2 | image pool."""
  groups: int = 4
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    ch = x.shape[-1]
    if ch % self.groups:
      raise ValueError(f'MSConv: {ch} channels not divisible by groups={self.groups}')
    chunks = jnp.split(x, self.groups, axis=-1)
    g = ch // self.groups
    outs = [Conv(g, 1, use_bias=True, dtype=self.dtype)(chunks[0])]
    for d, chunk in enumerate(chunks[1:-1], start=1):
      outs.append(Conv(g, 3, dilation=d, groups=g, use_bias=True, dtype=self.dtype)(chunk))
    # ImagePool: GAP -> 1x1 -> bilinear resize of a 1x1 map, i.e. a broadcast.
    pooled = jnp.mean(chunks[-1], axis=(1, 2), keepdims=True)
    pooled = Conv(g, 1, use_bias=True, dtype=self.dtype)(pooled)
    pooled = broadcast_f32(pooled, chunks[-1].shape[:-1] + (g,)).astype(self.dtype)
    outs.append(pooled)
    y = jnp.concatenate(outs, axis=-1)
    return gelu(batch_norm(train, self.dtype)(y))


class Gate(nn.Module):
  """MSConv(RCAB(x)) + x: the long residual of the gate."""
  global_pool: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    y = RCAB(global_pool=self.global_pool, dtype=self.dtype)(x)
    return MSConv(dtype=self.dtype)(y, train) + x


class CrossGL(nn.Module):
  """Cross gate between the SR features `a` and the segmentation features `b`.

  The gate is unbounded (GELU, not sigmoid); each task has its own projection and
  output conv. Returns (a', b').
  """
  hidden: int = 32
  global_pool: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, a, b, train: bool):
    z = jnp.concatenate([a.astype(self.dtype), b.astype(self.dtype)], axis=-1)
    z = Conv(self.hidden, 1, use_bias=True, dtype=self.dtype, name='fuse')(z)
    z = gelu(batch_norm(train, self.dtype, name='fuse_bn')(z))
    z = Gate(self.global_pool, self.dtype, name='gate')(z, train)
    outs = []
    for name, f in (('sr', a), ('seg', b)):
      ch = f.shape[-1]
      g = gelu(Conv(ch, 1, use_bias=True, dtype=self.dtype, name=f'{name}_proj')(z))
      outs.append(Conv(ch, 1, use_bias=True, dtype=self.dtype, name=f'{name}_out')(g * f) + f)
    return tuple(outs)
