"""Building blocks with PyTorch semantics: init, conv, BN, resampling, PixelShuffle.

The official model is PyTorch; these blocks reproduce its defaults (docs/method.md
§Initialisation, §Resampling and BatchNorm) so that parameter counts, initial statistics
and shapes match it exactly.
All tensors are NHWC.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

# PyTorch's default conv weight init, kaiming_uniform(a=sqrt(5)): U(+-1/sqrt(fan_in)).
torch_kernel_init = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')


def torch_bias_init(fan_in: int):
  """PyTorch's default conv bias init, U(+-1/sqrt(fan_in)); needs the weight's fan-in."""
  bound = 1.0 / np.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def broadcast_f32(x, shape):
  """broadcast_to through float32 (float64 stays float64), so that its gradient (a
  sum over the broadcast axes) is a float32 reduction: XLA reduces bfloat16 in
  bfloat16, and on XLA:CPU 8192 bfloat16 ones sum to 1024."""
  return jnp.broadcast_to(x.astype(jnp.promote_types(x.dtype, jnp.float32)), shape)


def _depthwise(x, kernel, pad: int, dilation: int):
  """Depthwise conv as a sum of k*k shifted, per-channel scaled copies.

  Same result as a grouped conv; XLA fuses it into one elementwise loop, where
  XLA:CPU's grouped convolution is ~20x slower. The float32 kernel makes the
  sum float32 (fused, so no extra memory traffic) and the kernel's gradient, a
  sum over every pixel, a float32 reduction. Returns x's dtype.
  """
  k = kernel.shape[0]
  h, w = x.shape[1] + 2 * pad - dilation * (k - 1), x.shape[2] + 2 * pad - dilation * (k - 1)
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  y = 0
  for i in range(k):
    for j in range(k):
      tap = xp[:, i * dilation:i * dilation + h, j * dilation:j * dilation + w]
      y = y + tap * broadcast_f32(kernel[i, j, 0], tap.shape)
  return y.astype(x.dtype)


def _conv_nhwc(x, kernel, stride: int, pad: int, dilation: int, groups: int):
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=(stride, stride), padding=((pad, pad), (pad, pad)),
      rhs_dilation=(dilation, dilation), dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=groups)


def _kernel_grad_by_taps(x, g, k: int, stride: int, pad: int, dilation: int):
  """dL/dkernel (k, k, in, out) as k*k matmuls (pixels contracted) of shifted x with g.

  XLA:CPU runs a convolution's weight gradient as a convolution whose window is the
  whole image, 2x (3x3) to 30x (1x1) slower than these matmuls; accumulates in float32.
  """
  n, ho, wo, co = g.shape
  ci = x.shape[-1]
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  g2 = g.reshape(-1, co)
  acc = jnp.promote_types(jnp.promote_types(x.dtype, g.dtype), jnp.float32)
  taps = []
  for i in range(k):
    for j in range(k):
      start = (0, i * dilation, j * dilation, 0)
      limit = (n, start[1] + stride * (ho - 1) + 1, start[2] + stride * (wo - 1) + 1, ci)
      t = jax.lax.slice(xp, start, limit, (1, stride, stride, 1)).reshape(-1, ci)
      taps.append(jax.lax.dot_general(t, g2, (((0,), (0,)), ((), ())),
                                      preferred_element_type=acc))
  return jnp.stack(taps).reshape(k, k, ci, co)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv2d(x, kernel, stride: int, pad: int, dilation: int):
  """NHWC x HWIO convolution (groups = 1) whose kernel gradient is platform-specific:
  k*k pixel-contracting matmuls on CPU, XLA's own transposed convolution elsewhere
  (cuDNN's weight-gradient kernels on GPU). Same values either way."""
  return _conv_nhwc(x, kernel, stride, pad, dilation, 1)


def _conv2d_fwd(x, kernel, stride, pad, dilation):
  return _conv_nhwc(x, kernel, stride, pad, dilation, 1), (x, kernel)


def _conv2d_bwd(stride, pad, dilation, res, g):
  x, kernel = res
  conv = functools.partial(_conv_nhwc, stride=stride, pad=pad, dilation=dilation, groups=1)
  # linear_transpose, not vjp: a vjp would also trace the (dead) forward conv into
  # the jaxpr, which XLA drops but the FLOP count (flops.py) would not.
  dx = jax.linear_transpose(lambda x_: conv(x_, kernel), x)(g)[0]

  def by_taps(x, g):
    return _kernel_grad_by_taps(x, g, kernel.shape[0], stride, pad, dilation).astype(kernel.dtype)

  def by_xla(x, g):
    return jax.linear_transpose(lambda k_: conv(x, k_), kernel)(g)[0]

  dk = jax.lax.platform_dependent(x, g, cpu=by_taps, default=by_xla)
  return dx, dk


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


class Conv(nn.Module):
  """2-D convolution with PyTorch init; symmetric padding defaults to 'same' for odd k."""
  features: int
  kernel_size: int = 1
  stride: int = 1
  padding: int | None = None  # None = (k - 1) // 2 * dilation.
  dilation: int = 1
  groups: int = 1
  use_bias: bool = False
  dtype: Dtype = jnp.float32
  kernel_init: Any = torch_kernel_init

  @nn.compact
  def __call__(self, x):
    k, d = self.kernel_size, self.dilation
    in_ch = x.shape[-1]
    if in_ch % self.groups:
      raise ValueError(f'{in_ch} input channels are not divisible by groups={self.groups}')
    kernel = self.param('kernel', self.kernel_init, (k, k, in_ch // self.groups, self.features))
    pad = (k - 1) // 2 * d if self.padding is None else self.padding
    if self.groups == in_ch == self.features and self.stride == 1:
      y = _depthwise(x.astype(self.dtype), kernel, pad, d)
    elif self.groups == 1:
      y = conv2d(x.astype(self.dtype), kernel.astype(self.dtype), self.stride, pad, d)
    else:
      y = _conv_nhwc(x.astype(self.dtype), kernel.astype(self.dtype), self.stride, pad, d,
                     self.groups)
    if self.use_bias:
      fan_in = in_ch // self.groups * k * k
      bias = self.param('bias', torch_bias_init(fan_in), (self.features,))
      y = (y + broadcast_f32(bias, y.shape)).astype(self.dtype)  # float32 bias gradient.
    return y


class BatchNorm(nn.Module):
  """BatchNorm2d as PyTorch computes it (NHWC, statistics over N, H, W).

  Train mode normalises with the biased batch variance but stores the unbiased
  one (x n / (n - 1), n = N*H*W) in the running variance, as PyTorch does;
  flax's nn.BatchNorm stores the biased one, which lets eval outputs drift away
  from the official model's as training goes on (most where n is small). Same
  variable names as nn.BatchNorm (params scale/bias, batch_stats mean/var), so
  checkpoints and pretrained loaders are unaffected. Statistics are float32 for
  bfloat16 inputs.
  """
  use_running_average: bool = False
  momentum: float = 0.9  # flax convention: running = momentum * running + (1 - momentum) * batch.
  epsilon: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    stat_dtype = jnp.promote_types(x.dtype, jnp.float32)
    ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones((c,), jnp.float32))
    scale = self.param('scale', nn.initializers.ones, (c,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (c,), jnp.float32)
    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      xs = x.astype(stat_dtype)
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(xs, axes)
      var = jnp.maximum(jnp.mean(jnp.square(xs), axes) - jnp.square(mean), 0.0)
      if not self.is_initializing():
        n = int(np.prod([x.shape[a] for a in axes]))
        unbiased = var * (n / max(n - 1, 1))
        m = self.momentum
        ra_mean.value = (m * ra_mean.value + (1 - m) * mean).astype(ra_mean.value.dtype)
        ra_var.value = (m * ra_var.value + (1 - m) * unbiased).astype(ra_var.value.dtype)
    mul = jax.lax.rsqrt(var + self.epsilon) * scale
    y = (x.astype(stat_dtype) - mean) * mul + bias
    return y.astype(self.dtype)


def batch_norm(train: bool, dtype: Dtype, name: str | None = None):
  """PyTorch BatchNorm2d defaults: momentum 0.1 (flax 0.9), eps 1e-5, affine."""
  return BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                   name=name)


def gelu(x):
  """The exact (erf) GELU of PyTorch's nn.GELU()."""
  return jax.nn.gelu(x, approximate=False)


class ConvBNAct(nn.Module):
  """conv (no bias) -> BN -> activation: the repository's `Conv2d` block."""
  features: int
  kernel_size: int = 1
  stride: int = 1
  dilation: int = 1
  act: Any = nn.relu
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = Conv(self.features, self.kernel_size, self.stride, dilation=self.dilation,
             dtype=self.dtype)(x)
    x = batch_norm(train, self.dtype)(x)
    return self.act(x) if self.act is not None else x


def max_pool_3x3_s2(x):
  """MaxPool2d(3, 2, padding=1): -inf padding, output ceil(H / 2)."""
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def _interp_matrix(in_size: int, out_size: int, align_corners: bool) -> np.ndarray:
  """(out, in) linear-interpolation weights with PyTorch's source-coordinate rule."""
  dst = np.arange(out_size, dtype=np.float64)
  if align_corners:
    src = dst * ((in_size - 1) / (out_size - 1)) if out_size > 1 else np.zeros_like(dst)
  else:  # Half-pixel centres, clamped at 0 like PyTorch (no antialiasing).
    src = np.maximum((dst + 0.5) * (in_size / out_size) - 0.5, 0.0)
  lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  hi = np.minimum(lo + 1, in_size - 1)
  frac = src - lo
  m = np.zeros((out_size, in_size))
  np.add.at(m, (np.arange(out_size), lo), 1 - frac)
  np.add.at(m, (np.arange(out_size), hi), frac)
  return m


def _interp_matrix_traced(in_size, out_size, align_corners: bool, dtype):
  """`_interp_matrix` built in float32 from sizes that may be symbolic dimensions
  (`jax.export` with symbolic height and width), where NumPy cannot see the sizes."""
  dst = jnp.arange(out_size, dtype=jnp.float32)
  fin, fout = jnp.asarray(in_size, jnp.float32), jnp.asarray(out_size, jnp.float32)
  if align_corners:
    src = dst * ((fin - 1) / jnp.maximum(fout - 1, 1))
  else:
    src = jnp.maximum((dst + 0.5) * (fin / fout) - 0.5, 0.0)
  lo = jnp.minimum(jnp.floor(src).astype(jnp.int32), in_size - 1)
  hi = jnp.minimum(lo + 1, in_size - 1)
  frac = (src - lo)[:, None]
  cols = jnp.arange(in_size, dtype=jnp.int32)[None, :]
  m = jnp.where(cols == lo[:, None], 1 - frac, 0) + jnp.where(cols == hi[:, None], frac, 0)
  return m.astype(dtype)


def _is_symbolic(*sizes) -> bool:
  return any(jax.export.is_symbolic_dim(s) for s in sizes)


def _lerp_axis(x, axis: int, out_size, align_corners: bool):
  """Interpolation along one axis as a small matmul: its gradient is a matmul too,
  where a gather's would be a scatter (slow on CPU and TPU)."""
  in_size = x.shape[axis]
  if in_size == out_size:  # Symbolic dimensions compare equal only when provably equal.
    return x
  if _is_symbolic(in_size, out_size):
    m = _interp_matrix_traced(in_size, out_size, align_corners, x.dtype)
  else:
    m = jnp.asarray(_interp_matrix(in_size, out_size, align_corners), x.dtype)
  precision = jax.lax.Precision.HIGHEST if x.dtype == jnp.float32 else None
  y = jnp.tensordot(m, jnp.moveaxis(x, axis, 0), axes=1, precision=precision)
  return jnp.moveaxis(y, 0, axis)


def resize_bilinear(x, size: Sequence[int], align_corners: bool):
  """Bilinear NHWC resize to (H, W) with PyTorch semantics.

  `jax.image.resize` is half-pixel and antialiases on downsampling, so neither
  align_corners=True (UNet) nor non-antialiased downsampling can use it.
  """
  h, w = (s if _is_symbolic(s) else int(s) for s in size)
  x = _lerp_axis(x, 1, h, align_corners)
  return _lerp_axis(x, 2, w, align_corners)


def pixel_shuffle(x, r: int):
  """PyTorch PixelShuffle in NHWC: channel c*r*r + i*r + j -> pixel (y*r+i, x*r+j) of c."""
  n, h, w, c = x.shape
  if c % (r * r):
    raise ValueError(f'pixel_shuffle: {c} channels not divisible by r^2 = {r * r}')
  x = x.reshape(n, h, w, c // (r * r), r, r)
  x = x.transpose(0, 1, 4, 2, 5, 3)
  return x.reshape(n, h * r, w * r, c // (r * r))


class SRHead(nn.Module):
  """ESPCN-style SR head `sr_module`: 5x5 -> Tanh -> 3x3 -> Tanh -> 3x3 -> PixelShuffle(r)."""
  upscale: int
  out_channels: int = 3  # The official head reconstructs the input's channels.
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    r = self.upscale
    if r == 1:
      return Conv(self.out_channels, 1, use_bias=True, dtype=self.dtype)(x)
    x = jnp.tanh(Conv(64, 5, dtype=self.dtype)(x))
    x = jnp.tanh(Conv(32, 3, dtype=self.dtype)(x))
    x = Conv(self.out_channels * r * r, 3, dtype=self.dtype)(x)
    return pixel_shuffle(x, r)


def count_params(tree) -> int:
  return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(tree)))

