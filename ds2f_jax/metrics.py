"""Resizing predictions back to the original resolution (eval and predict).

The other metrics live by concern: `confusion` (confusion matrices and the
segmentation metrics), `auc` (streamed ROC/PR AUCs) and `sr_quality` (PSNR,
SSIM).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def legacy_nearest_indices(in_size: int, out_size: int) -> np.ndarray:
  """Source indices of PyTorch's legacy 'nearest' (upsample_nearest kernels).

  src = min(floor(dst * scale), in - 1) with scale = float32(in) / out and a
  float32 product, exactly as PyTorch computes it. This is the rule
  floor(dst * in / out) of the spec up to float32 rounding, which moves a few
  rows for some sizes (e.g. 5 -> 605); PyTorch's own special cases
  (out == in, out == 2 * in) agree with the float32 rule.
  """
  if in_size < 1 or out_size < 1:
    raise ValueError(f'resize sizes must be positive, got {in_size} -> '
                     f'{out_size}')
  scale = np.float32(in_size) / np.float32(out_size)
  src = np.floor(np.arange(out_size, dtype=np.float32) * scale)
  return np.minimum(src.astype(np.int64), in_size - 1).astype(np.int32)


def nearest_resize_probs(probs, size: tuple[int, int],
                         axes: tuple[int, int] = (-3, -2)):
  """Resizes (..., h, w, C) maps to (..., H, W, C) like PyTorch 'nearest'.

  `size` is (H, W) (decision 9.9) and must be static under jit; `axes` are
  the spatial axes (use (-2, -1) for (N, h, w) label maps). Works for any
  dtype since it only gathers.
  """
  probs = jnp.asarray(probs)
  if len(size) != 2:
    raise ValueError(f'nearest_resize_probs: size must be (H, W), got {size}')
  ax_h, ax_w = (a % probs.ndim for a in axes)
  rows = legacy_nearest_indices(probs.shape[ax_h], int(size[0]))
  cols = legacy_nearest_indices(probs.shape[ax_w], int(size[1]))
  out = jnp.take(probs, jnp.asarray(rows), axis=ax_h)
  return jnp.take(out, jnp.asarray(cols), axis=ax_w)

