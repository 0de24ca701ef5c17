"""Quality of the SR stream: PSNR and SSIM, one SSIM for the loss and the metric.

Images are (..., H, W, C), float32 on the device. For SR outputs in [-1, 1],
eval maps both images to [0, 1] with (x + 1) / 2 and uses data_range=1: PSNR
is the same either way, but SSIM's luminance term is not shift-invariant, and
the literature reports SSIM on [0, 1] (or 0..255) images. The loss
(`losses.ssim`) is the mean of `ssim` over the batch, on the data range the
config names (docs/method.md, Losses).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def psnr(x, y, data_range: float = 1.0):
  """Per-image PSNR in dB over the last three axes; inf for identical images."""
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(y, jnp.float32)
  if x.shape != y.shape or x.ndim < 3:
    raise ValueError(f'psnr: need equal (..., H, W, C) shapes, got {x.shape} '
                     f'and {y.shape}')
  mse = jnp.mean(jnp.square(x - y), axis=(-3, -2, -1))
  return 10.0 * jnp.log10(jnp.float32(data_range) ** 2 / mse)


def _gaussian_taps(win_size: int, sigma: float) -> np.ndarray:
  # A trace-time constant, so building it in NumPy puts no float64 on device.
  coords = np.arange(win_size, dtype=np.float64) - win_size // 2
  g = np.exp(-(coords**2) / (2.0 * sigma**2))
  return (g / g.sum()).astype(np.float32)


def _filter_valid(x: jax.Array, taps: np.ndarray, axis: int) -> jax.Array:
  """Valid 1-D correlation along `axis`, as a sum of shifted slices: exact
  float32 on every backend (a convolution may run in TF32 on GPUs)."""
  k = taps.shape[0]
  n = x.shape[axis] - k + 1
  out = taps[0] * lax.slice_in_dim(x, 0, n, axis=axis)
  for i in range(1, k):
    out = out + taps[i] * lax.slice_in_dim(x, i, i + n, axis=axis)
  return out


def ssim(x, y, *, data_range: float = 1.0, win_size: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> jax.Array:
  """Per-image Gaussian SSIM (Wang et al. 2004) with pytorch_msssim semantics.

  (..., H, W, C) -> (...): an 11x11 Gaussian window (sigma 1.5) applied
  without padding ('valid', so H and W must be >= win_size), separably (H,
  then W) per channel; the SSIM map is averaged over space and channels.
  """
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(y, jnp.float32)
  if x.shape != y.shape or x.ndim < 3:
    raise ValueError(f'ssim: need equal (..., H, W, C) shapes, got {x.shape} and {y.shape}')
  if win_size % 2 != 1:
    raise ValueError(f'ssim: win_size must be odd, got {win_size}.')
  *lead, h, w, c = x.shape
  if min(h, w) < win_size:
    raise ValueError(f'ssim: spatial size {(h, w)} is smaller than win_size {win_size}.')
  x, y = x.reshape(-1, h, w, c), y.reshape(-1, h, w, c)
  c1 = (k1 * data_range)**2
  c2 = (k2 * data_range)**2
  taps = _gaussian_taps(win_size, sigma)
  # Filter the five maps in one pass by stacking them on the channel axis.
  stacked = jnp.concatenate([x, y, x * x, y * y, x * y], axis=-1)
  filtered = _filter_valid(_filter_valid(stacked, taps, 1), taps, 2)
  mu_x, mu_y, e_xx, e_yy, e_xy = jnp.split(filtered, 5, axis=-1)
  mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
  luminance = (2.0 * mu_xy + c1) / (mu_xx + mu_yy + c1)
  contrast_structure = (2.0 * (e_xy - mu_xy) + c2) / (e_xx - mu_xx + e_yy - mu_yy + c2)
  return jnp.mean(luminance * contrast_structure, axis=(1, 2, 3)).reshape(lead)
