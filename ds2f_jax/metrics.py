"""Resizing predictions back to the original resolution, on device (eval).

The rule is `imaging.nearest_indices` (PyTorch's legacy 'nearest', as the
official evaluation resizes), the same one predict and serving apply on the
host. The other metrics live by concern: `confusion` (confusion matrices and
the segmentation metrics), `auc` (streamed ROC/PR AUCs) and `sr_quality`
(PSNR, SSIM).
"""

from __future__ import annotations

import jax.numpy as jnp

from ds2f_jax import imaging


def nearest_resize_probs(probs, size: tuple[int, int],
                         axes: tuple[int, int] = (-3, -2)):
  """Resizes (..., h, w, C) maps to (..., H, W, C) by `imaging.nearest_indices`.

  `size` is (H, W) and must be static under jit; `axes` are the spatial axes
  (use (-2, -1) for (N, h, w) label maps). Works for any dtype since it only
  gathers.
  """
  probs = jnp.asarray(probs)
  if len(size) != 2:
    raise ValueError(f'nearest_resize_probs: size must be (H, W), got {size}')
  ax_h, ax_w = (a % probs.ndim for a in axes)
  rows = imaging.nearest_indices(probs.shape[ax_h], int(size[0]))
  cols = imaging.nearest_indices(probs.shape[ax_w], int(size[1]))
  out = jnp.take(probs, jnp.asarray(rows, jnp.int32), axis=ax_h)
  return jnp.take(out, jnp.asarray(cols, jnp.int32), axis=ax_w)
