"""Sizes and resampling of the network's input and output, in NumPy alone.

One home for the rules that training, evaluation, `--mode predict`, export and
serving must apply identically (serving imports this module without jax, flax
or TensorFlow):

* the network's input and output size for each `model.variant` (`io_sizes`):
  DS2F maps LR = data.hr_size / r to HR; the segmentation-only baselines have
  no x r step, seg_only running at LR and seg_hr at HR (docs/method.md,
  segmentation-only baselines);
* the bicubic resize of an image (OpenCV INTER_CUBIC semantics, implemented in
  `augment`) followed by the normalisation x / 255 * 2 - 1 (`bicubic_normalised`);
* the nearest-neighbour rules: PyTorch's for probabilities going back to an
  image's own size (`resize_nearest`: eval, predict, serving), OpenCV's for
  training masks (`resize_mask`), each the one the official code uses there;
* the smallest image accepted for inference (`check_image_size`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ds2f_jax import augment

# Segmentation-only variants: the size they see, which is also their output size.
SEG_INPUT = {'seg_only': 'lr', 'seg_hr': 'hr'}

# Inference resizes every image to the network input, up or down, so any image
# with a pixel is accepted (as the training pipeline accepts originals of any
# size); the network's own minimum applies to the input size, not to the image.
MIN_IMAGE_SIDE = 1


def check_sizes(hr_size: Sequence[int], upscale: int) -> tuple[int, int]:
  """Validates (height, width) of the HR target against the upscale rate r."""
  if len(hr_size) != 2 or any(int(v) <= 0 for v in hr_size):
    raise ValueError(
        f'data.hr_size must be (height, width) of positive ints, got {hr_size}.')
  if int(upscale) < 1:
    raise ValueError(f'model.upscale must be a positive int, got {upscale}.')
  height, width = (int(v) for v in hr_size)
  if height % upscale or width % upscale:
    raise ValueError(
        f'data.hr_size {tuple(hr_size)} is not divisible by model.upscale'
        f' {upscale}: the LR input would not be exactly HR / r.')
  return height, width


def io_sizes(hr_size: Sequence[int], upscale: int,
             variant: str = 'ds2f') -> tuple[tuple[int, int], tuple[int, int]]:
  """(input, output) (height, width) of the network for `model.variant`.

  DS2F variants map LR = hr_size / r to HR; seg_only runs at LR and seg_hr at
  HR, input and output alike.
  """
  upscale = int(upscale)
  height, width = check_sizes(hr_size, upscale)
  lr = (height // upscale, width // upscale)
  where = SEG_INPUT.get(variant)
  if where == 'lr':
    return lr, lr
  if where == 'hr':
    return (height, width), (height, width)
  return lr, (height, width)


def input_size(config) -> tuple[int, int]:
  """(height, width) the network of `config` takes (`io_sizes` of its data and model)."""
  return io_sizes(config.data.hr_size, config.model.upscale, config.model.variant)[0]


def normalise(image: np.ndarray) -> np.ndarray:
  """uint8 -> float32 x / 255 * 2 - 1 in [-1, 1] (mean 0.5, std 0.5).

  uint8 images go through one table look-up (`augment.lookup`, OpenCV's LUT
  where installed): the same values as the arithmetic, in one pass.
  """
  if image.dtype == np.uint8:
    return augment.lookup(image, _NORMALISED)
  return _normalise(image)


def _normalise(image: np.ndarray) -> np.ndarray:
  out = image.astype(np.float32)
  out /= 255
  out *= 2
  out -= 1
  return out


_NORMALISED = _normalise(np.arange(256, dtype=np.uint8))


def bicubic_normalised(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
  """uint8 RGB at any size -> float32 in [-1, 1] at `size`: the network's input.

  Bicubic with OpenCV INTER_CUBIC semantics, rounded to uint8 before
  normalising, exactly as training builds its LR and HR images.
  """
  return normalise(augment.resize_bicubic(np.asarray(image, np.uint8), tuple(size)))


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
  """Source index of each output index under PyTorch's legacy 'nearest'.

  The official evaluation resizes probabilities back to an image's own size
  with `F.interpolate(mode='nearest')`, which computes
  min(floor(dst * float32(in / out)), in - 1) in float32. For most size pairs
  that is floor(dst * in / out); for some it is not (512 -> 3504 moves 11
  columns), and the evaluation must pick the same pixels as the official one,
  so eval, predict and serving all use this rule.
  """
  in_size, out_size = _positive_sizes(in_size, out_size)
  scale = np.float32(in_size) / np.float32(out_size)
  src = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
  return np.minimum(src, in_size - 1)


def mask_nearest_indices(in_size: int, out_size: int) -> np.ndarray:
  """floor(dst * in / out) in exact integers: OpenCV's INTER_NEAREST.

  The official data pipeline resizes training masks with OpenCV/albumentations,
  so masks (and FOV masks) going to the HR training size use this rule.
  """
  in_size, out_size = _positive_sizes(in_size, out_size)
  return np.arange(out_size, dtype=np.int64) * in_size // out_size


def _positive_sizes(in_size, out_size) -> tuple[int, int]:
  in_size, out_size = int(in_size), int(out_size)
  if in_size < 1 or out_size < 1:
    raise ValueError(f'resize sizes must be positive, got {in_size} -> {out_size}')
  return in_size, out_size


def _gather(x, size, indices) -> np.ndarray:
  if len(size) != 2 or any(int(v) <= 0 for v in size):
    raise ValueError(f'resize: size must be positive (height, width), got {size}.')
  x = np.asarray(x)
  rows = indices(x.shape[0], size[0])
  cols = indices(x.shape[1], size[1])
  return np.take(np.take(x, rows, axis=0), cols, axis=1)


def resize_nearest(x: np.ndarray, size: Sequence[int]) -> np.ndarray:
  """Predictions (h, w, ...) -> (H, W, ...) by `nearest_indices`; any dtype."""
  return _gather(x, size, nearest_indices)


def resize_mask(x: np.ndarray, size: Sequence[int]) -> np.ndarray:
  """Training masks (h, w, ...) -> (H, W, ...) by `mask_nearest_indices`."""
  return _gather(x, size, mask_nearest_indices)


def check_image_size(shape: Sequence[int], name: str = 'image') -> None:
  """Refuses an image with fewer than MIN_IMAGE_SIDE pixels on a side, naming it."""
  if len(shape) < 2 or min(shape[:2]) < MIN_IMAGE_SIDE:
    raise ValueError(f'{name} of shape {tuple(shape)} is empty: each side must be >= '
                     f'{MIN_IMAGE_SIDE} pixel')
