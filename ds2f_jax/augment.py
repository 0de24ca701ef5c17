"""The official DS2F augmentation and resampling, in NumPy (host side).

The official code augments with albumentations 1.x, whose ops are thin wrappers
around OpenCV on uint8 images, and builds the LR/HR pair with `cv2.resize`
(docs/method.md §Data pipeline, D10-D11). Two backends do the same work:

- 'opencv' (used when `cv2` imports): the OpenCV calls themselves, ~7x
  faster per example than NumPy at 1 megapixel (benchmarks/RESULTS.md, input
  pipeline at native sizes): what it takes to keep an accelerator fed.
- 'numpy': each op reproduces the OpenCV uint8 arithmetic it stands for
  (fixed-point grey and HSV conversions, look-up tables that truncate,
  sub-pixel positions quantised to 1/32 in `warpAffine`...), so that serving
  and minimal installs need no OpenCV. It matches OpenCV bit for bit except
  HSV→RGB (one level on ~7 % of values with OpenCV 4.14, < 1 % with
  earlier 4.x) and bicubic resizing (< 0.01 % of pixels off by one level);
  tests/test_augment.py runs every check on both.

`set_backend` switches between them (tests, or to pin the NumPy arithmetic).

Label maps (class ids, field of view) only ever go through flips and
nearest-neighbour sampling, so they keep their value set.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import math

import numpy as np

try:
  import cv2
except ImportError:  # Serving-only installs: the NumPy arithmetic below.
  cv2 = None

BACKENDS = ('opencv', 'numpy')
_backend = 'opencv' if cv2 is not None else 'numpy'


def backend() -> str:
  """The backend in use: 'opencv' when cv2 imports, else 'numpy'."""
  return _backend


def set_backend(name: str) -> str:
  """Selects 'opencv' or 'numpy' for every op below; returns the previous."""
  global _backend
  if name not in BACKENDS:
    raise ValueError(f'augment backend must be one of {BACKENDS}, got {name!r}.')
  if name == 'opencv' and cv2 is None:
    raise ValueError('augment backend opencv: cv2 is not importable'
                     ' (pip install opencv-python-headless).')
  previous, _backend = _backend, name
  return previous


def _cv() -> bool:
  return _backend == 'opencv'


# albumentations 1.x recipe of the official vessel script (docs/method.md §Augmentation).
COLOR_JITTER = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
COLOR_JITTER_P = 0.5
HFLIP_P = 0.5
VFLIP_P = 0.5
SHIFT_LIMIT = 0.1  # Fraction of width / height.
ROTATE_LIMIT = 60.0  # Degrees.
SHIFT_ROTATE_P = 0.5

_CUBIC_A = -0.75  # OpenCV's bicubic kernel parameter (PyTorch uses the same).


@dataclasses.dataclass(frozen=True)
class Jitter:
  """ColorJitter factors and the order of its four ops (0 b, 1 c, 2 s, 3 h)."""

  brightness: float = 1.0
  contrast: float = 1.0
  saturation: float = 1.0
  hue: float = 0.0
  order: tuple[int, ...] = (0, 1, 2, 3)


@dataclasses.dataclass(frozen=True)
class AugmentParams:
  """One draw of the recipe; None / False means that op is skipped."""

  jitter: Jitter | None = None
  hflip: bool = False
  vflip: bool = False
  shift_rotate: tuple[float, float, float] | None = None  # Degrees, dx, dy.


def sample_params(rng: np.random.Generator) -> AugmentParams:
  """Draws the official recipe: each op with its own probability."""
  jitter = None
  if rng.random() < COLOR_JITTER_P:
    b, c, s, h = (COLOR_JITTER[k] for k in ('brightness', 'contrast',
                                             'saturation', 'hue'))
    jitter = Jitter(
        brightness=rng.uniform(max(0.0, 1 - b), 1 + b),
        contrast=rng.uniform(max(0.0, 1 - c), 1 + c),
        saturation=rng.uniform(max(0.0, 1 - s), 1 + s),
        hue=rng.uniform(-h, h),
        order=tuple(int(i) for i in rng.permutation(4)),
    )
  hflip = bool(rng.random() < HFLIP_P)
  vflip = bool(rng.random() < VFLIP_P)
  shift_rotate = None
  if rng.random() < SHIFT_ROTATE_P:
    shift_rotate = (
        rng.uniform(-ROTATE_LIMIT, ROTATE_LIMIT),
        rng.uniform(-SHIFT_LIMIT, SHIFT_LIMIT),
        rng.uniform(-SHIFT_LIMIT, SHIFT_LIMIT),
    )
  return AugmentParams(jitter, hflip, vflip, shift_rotate)


def augment(
    image: np.ndarray,
    maps: Sequence[np.ndarray],
    rng: np.random.Generator,
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
  """Applies the official recipe to an image and its aligned label maps.

  ColorJitter (p 0.5) → HorizontalFlip (p 0.5) → VerticalFlip (p 0.5) →
  ShiftScaleRotate (shift ±10 %, no scale, rotate ±60°, p 0.5, reflect-101).

  Args:
    image: (H, W, 3) uint8 RGB.
    maps: (H, W) label maps (mask, field of view...); nearest sampling.
    rng: the only source of randomness, so a seeded generator reproduces the
      exact augmentation.

  Returns:
    The augmented image and maps, same shapes and dtypes.
  """
  return apply_params(image, maps, sample_params(rng))


def apply_params(
    image: np.ndarray, maps: Sequence[np.ndarray], params: AugmentParams
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
  """Applies one fixed draw of the recipe (see `augment`)."""
  _check_image(image)
  maps = tuple(maps)
  for m in maps:
    if m.shape[:2] != image.shape[:2]:
      raise ValueError(
          f'augment: label map shape {m.shape} does not match image shape'
          f' {image.shape}.'
      )
  if params.jitter is not None:
    image = color_jitter(image, params.jitter)
  if params.hflip:
    image, maps = _flip(image, 1), tuple(_flip(m, 1) for m in maps)
  if params.vflip:
    image, maps = _flip(image, 0), tuple(_flip(m, 0) for m in maps)
  if params.shift_rotate is not None:
    image, maps = shift_rotate(image, maps, *params.shift_rotate)
  return (
      np.ascontiguousarray(image),
      tuple(np.ascontiguousarray(m) for m in maps),
  )


def _flip(x: np.ndarray, axis: int) -> np.ndarray:
  # cv2.flip copies in one pass; NumPy's reversed view is copied at the end.
  if _cv() and x.flags['C_CONTIGUOUS'] and x.dtype.type in _CV_WARP_DTYPES:
    return cv2.flip(x, 1 if axis == 1 else 0).reshape(x.shape)
  return x[:, ::-1] if axis == 1 else x[::-1]


# ----------------------------------------------------------------------------
# Colour (albumentations ColorJitter: the torchvision formulas on uint8).


def color_jitter(image: np.ndarray, jitter: Jitter) -> np.ndarray:
  """Brightness, contrast, saturation and hue in `jitter.order`."""
  _check_image(image)
  ops = (
      lambda x: adjust_brightness(x, jitter.brightness),
      lambda x: adjust_contrast(x, jitter.contrast),
      lambda x: adjust_saturation(x, jitter.saturation),
      lambda x: adjust_hue(x, jitter.hue),
  )
  for i in jitter.order:
    image = ops[i](image)
  return image


def adjust_brightness(image: np.ndarray, factor: float) -> np.ndarray:
  """x·f, truncated to uint8 (a look-up table in albumentations)."""
  if factor == 1:
    return image
  lut = np.clip(np.arange(256) * factor, 0, 255).astype(np.uint8)
  return lookup(image, lut)


def lookup(image: np.ndarray, table: np.ndarray) -> np.ndarray:
  """table[image] for a uint8 image and a 256-entry table of any dtype."""
  if _cv() and table.dtype.type in _CV_WARP_DTYPES and image.ndim <= 3 and (
      image.ndim < 3 or image.shape[2] <= 4):
    return cv2.LUT(np.ascontiguousarray(image), table).reshape(image.shape)
  return np.take(table, image)



def adjust_contrast(image: np.ndarray, factor: float) -> np.ndarray:
  """Blend with the mean grey level: x·f + mean·(1 − f), truncated."""
  if factor == 1:
    return image
  mean = rgb_to_gray(image).mean()
  if factor == 0:
    return np.full_like(image, int(mean + 0.5))
  lut = np.arange(256) * factor + mean * (1 - factor)
  return lookup(image, np.clip(lut, 0, 255).astype(np.uint8))


def adjust_saturation(image: np.ndarray, factor: float) -> np.ndarray:
  """Blend with the grey image, as `cv2.addWeighted` on uint8.

  OpenCV rounds grey·(1 − f) to float32, adds x·f with one fused rounding and
  rounds half to even; the float64 sum below reproduces that exactly.
  """
  if factor == 1:
    return image
  gray = rgb_to_gray(image)[..., None]
  if factor == 0:
    return np.repeat(gray, 3, axis=-1)
  if _cv():
    grey3 = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    return cv2.addWeighted(image, factor, grey3, 1 - factor, 0)
  alpha = np.float64(np.float32(factor))
  beta = np.float32(1 - factor)
  grey_part = (gray.astype(np.float32) * beta).astype(np.float64)
  out = (image * alpha + grey_part).astype(np.float32)
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def adjust_hue(image: np.ndarray, factor: float) -> np.ndarray:
  """Rotates OpenCV's 0..179 hue by 180·factor (truncated) through HSV."""
  if factor == 0:
    return image
  hsv = rgb_to_hsv(image)
  lut = np.mod(np.arange(256) + 180 * factor, 180).astype(np.uint8)
  if _cv():  # One pass: a 3-channel table, identity on S and V.
    same = np.arange(256, dtype=np.uint8)
    hsv = cv2.LUT(hsv, np.stack([lut, same, same], axis=-1)[:, None])
  else:
    hsv[..., 0] = np.take(lut, hsv[..., 0])
  return hsv_to_rgb(hsv)


def rgb_to_gray(image: np.ndarray) -> np.ndarray:
  """`cv2.COLOR_RGB2GRAY` on uint8: 15-bit fixed-point BT.601 luma."""
  if _cv():
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
  x = image.astype(np.int32)
  y = x[..., 0] * 9798 + x[..., 1] * 19235 + x[..., 2] * 3735
  return ((y + (1 << 14)) >> 15).astype(np.uint8)


def _division_table(numerator: float) -> np.ndarray:
  # OpenCV replaces divisions by 1..255 with rounded 12-bit reciprocals.
  i = np.maximum(np.arange(256), 1)
  table = np.rint(numerator / i).astype(np.int64)
  table[0] = 0
  return table


_SDIV = _division_table(255 << 12)  # Saturation: 255·diff / v.
_HDIV = _division_table((180 << 12) / 6)  # Hue: 30·delta / diff per sector.


def rgb_to_hsv(image: np.ndarray) -> np.ndarray:
  """`cv2.COLOR_RGB2HSV` on uint8: H in 0..179, S and V in 0..255."""
  if _cv():
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2HSV)
  # Planar copies: contiguous channels make every step below a fast loop.
  r, g, b = np.ascontiguousarray(
      image.reshape(-1, 3).T, dtype=np.int32
  )
  v = np.maximum(np.maximum(r, g), b)
  diff = v - np.minimum(np.minimum(r, g), b)
  half = 1 << 11
  s = (diff * np.take(_SDIV, v) + half) >> 12
  # Hue relative to the sector of the largest channel (red wins ties).
  h = np.where(v == g, b - r + 2 * diff, r - g + 4 * diff)
  h = np.where(v == r, g - b, h)
  h = (h * np.take(_HDIV, diff) + half) >> 12
  h += np.where(h < 0, 180, 0)
  hsv = np.empty((h.size, 3), np.uint8)
  hsv[:, 0], hsv[:, 1], hsv[:, 2] = h, s, v
  return hsv.reshape(image.shape)


# For each hue sector, which of (v, p, q, t) is red, green and blue, as the
# bit shift of that candidate inside a little-endian uint32 (v, p, q, t).
_SECTOR_SHIFTS = 8 * np.array(
    [[0, 3, 1], [2, 0, 1], [1, 0, 3], [1, 2, 0], [3, 1, 0], [0, 1, 2]],
    np.uint32,
)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
  """`cv2.COLOR_HSV2RGB` on uint8: float32 inside, truncated.

  OpenCV's vectorised uint8 path (every image wider than a few pixels)
  truncates rather than rounds; this matches it on >99 % of values (~93 %
  with OpenCV 4.14) and is never off by more than one level.
  """
  if _cv():
    return cv2.cvtColor(np.ascontiguousarray(hsv), cv2.COLOR_HSV2RGB)
  x = hsv.reshape(-1, 3).astype(np.float32)
  h = x[:, 0] * np.float32(6.0 / 180.0)
  s = x[:, 1] * np.float32(1.0 / 255.0)
  v = x[:, 2] * np.float32(1.0 / 255.0)
  h = np.where(h >= 6, h - 6, h)
  sector = np.floor(h)
  f = h - sector
  # v, p, q, t; with s = 0 all four equal v, which is OpenCV's grey case.
  candidates = np.empty((x.shape[0], 4), np.float32)
  candidates[:, 0] = v
  candidates[:, 1] = v * (1 - s)
  candidates[:, 2] = v * (1 - s * f)
  candidates[:, 3] = v * (1 - s * (1 - f))
  candidates *= 255
  np.floor(candidates, out=candidates)
  np.clip(candidates, 0, 255, out=candidates)
  # One uint32 per pixel; each channel shifts out the candidate it needs.
  packed = candidates.astype(np.uint8).view('<u4')[:, 0]
  sector = np.minimum(sector.astype(np.intp), 5)
  rgb = np.empty((x.shape[0], 3), np.uint8)
  for c in range(3):
    rgb[:, c] = packed >> np.take(_SECTOR_SHIFTS[:, c], sector)
  return rgb.reshape(hsv.shape)


# ----------------------------------------------------------------------------
# Geometry (albumentations ShiftScaleRotate → cv2.warpAffine, reflect-101).


def rotation_matrix(
    height: int, width: int, angle: float, dx: float, dy: float
) -> np.ndarray:
  """Forward 2x3 map of ShiftScaleRotate: rotate about (W/2, H/2), shift.

  `cv2.getRotationMatrix2D` convention: a positive angle turns the image
  counter-clockwise on screen; the shift is a fraction of width and height.
  """
  a = math.radians(angle)
  alpha, beta = math.cos(a), math.sin(a)
  cx, cy = width / 2, height / 2
  return np.array(
      [
          [alpha, beta, (1 - alpha) * cx - beta * cy + dx * width],
          [-beta, alpha, beta * cx + (1 - alpha) * cy + dy * height],
      ],
      np.float64,
  )


def shift_rotate(
    image: np.ndarray,
    maps: Sequence[np.ndarray],
    angle: float,
    dx: float,
    dy: float,
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
  """Bilinear for the image, nearest for the maps, both reflect-101."""
  height, width = image.shape[:2]
  matrix = rotation_matrix(height, width, angle, dx, dy)
  if _cv():
    return (_cv_warp(image, matrix, 'bilinear'),
            tuple(warp_affine(m, matrix, 'nearest') for m in maps))
  sx, sy = _source_positions(matrix, height, width)
  image = _sample_bilinear(image, sx, sy)
  if not maps:
    return image, ()
  # All maps share one gather.
  stacked = _sample_nearest(np.stack(maps, axis=-1), sx, sy)
  return image, tuple(stacked[..., i] for i in range(len(maps)))


def reflect101(index: np.ndarray, size: int) -> np.ndarray:
  """OpenCV BORDER_REFLECT_101 (gfedcb|abcdefgh|gfedcba), any distance."""
  if size == 1:
    return np.zeros_like(index)
  period = 2 * size - 2
  index = np.abs(index) % period
  return np.where(index >= size, period - index, index)


def _reflected(index: np.ndarray, size: int) -> np.ndarray:
  # Through a small look-up table over the range actually used: cheaper than
  # evaluating reflect101 on every pixel.
  lo = int(index.min())
  table = reflect101(np.arange(lo, int(index.max()) + 1, dtype=np.int32), size)
  return np.take(table, index - lo, mode='clip')


def _source_positions(
    matrix: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
  """Source x, y of every output pixel in OpenCV's 1/1024-px fixed point."""
  (a, b, c), (d, e, f) = matrix
  det = a * e - b * d
  inv = 1.0 / det if det else 0.0
  a11, a12, a21, a22 = e * inv, -b * inv, -d * inv, a * inv
  b1 = -a11 * c - a12 * f
  b2 = -a21 * c - a22 * f
  cols = np.arange(width, dtype=np.float64)
  rows = np.arange(height, dtype=np.float64)
  one = 1 << 10
  # As OpenCV: column and row parts are rounded to 1/1024 separately.
  def fixed(v):
    return np.rint(v * one).astype(np.int32)

  sx = fixed(a11 * cols)[None, :] + fixed(a12 * rows + b1)[:, None]
  sy = fixed(a21 * cols)[None, :] + fixed(a22 * rows + b2)[:, None]
  return sx, sy


def _sample_nearest(x: np.ndarray, sx: np.ndarray, sy: np.ndarray):
  height, width = x.shape[:2]
  ix = _reflected((sx + 512) >> 10, width)
  iy = _reflected((sy + 512) >> 10, height)
  flat = x.reshape(height * width, -1)
  # np.take: much faster than fancy indexing for gathering pixel rows.
  return np.take(flat, iy * width + ix, axis=0).reshape(sx.shape + x.shape[2:])


def _sample_bilinear(x: np.ndarray, sx: np.ndarray, sy: np.ndarray):
  if x.dtype != np.uint8:
    raise ValueError(f'warp_affine: bilinear expects uint8, got {x.dtype}.')
  height, width = x.shape[:2]
  out_shape = sx.shape + x.shape[2:]
  sx = ((sx + 16) >> 5).reshape(-1)  # 1/32 px, OpenCV's INTER_BITS.
  sy = ((sy + 16) >> 5).reshape(-1)
  x0, y0 = sx >> 5, sy >> 5
  fx = (sx & 31).astype(np.int32)
  fy = (sy & 31).astype(np.int32)
  cols = _reflected(np.stack([x0, x0 + 1]), width)
  rows = _reflected(np.stack([y0, y0 + 1]), height) * width
  # Channels first, so that every step below runs along long rows.
  planar = np.ascontiguousarray(
      x.reshape(height * width, -1).T, dtype=np.int32
  )

  def tap(j, i):
    # np.take is much faster than fancy indexing; indices are in range.
    return np.take(planar, rows[j] + cols[i], axis=1, mode='clip')

  # Weights are multiples of 1/32 per axis, so the result in units of 1/1024
  # is an exact integer and rounds half up like OpenCV's fixed-point remap.
  top = tap(0, 0) * (32 - fx) + tap(0, 1) * fx
  bottom = tap(1, 0) * (32 - fx) + tap(1, 1) * fx
  out = top * (32 - fy) + bottom * fy
  out = np.minimum((out + 512) >> 10, 255).astype(np.uint8).T
  return out.reshape(out_shape)


def warp_affine(
    x: np.ndarray, matrix: np.ndarray, interpolation: str
) -> np.ndarray:
  """`cv2.warpAffine` with BORDER_REFLECT_101 and the output size of `x`.

  Source positions follow OpenCV's fixed point (1/1024 px, then 1/32 px for
  bilinear), so uint8 results equal OpenCV 4.x bit for bit.

  Args:
    x: (H, W) or (H, W, C) array; uint8 for 'bilinear'.
    matrix: forward 2x3 map from source to destination pixel coordinates.
    interpolation: 'bilinear' or 'nearest'.

  Returns:
    An array like `x`.
  """
  if interpolation not in ('bilinear', 'nearest'):
    raise ValueError(
        f'warp_affine: interpolation must be bilinear or nearest, got'
        f' {interpolation!r}.'
    )
  if _cv() and _cv_warps(x, interpolation):
    return _cv_warp(x, matrix, interpolation)
  sx, sy = _source_positions(matrix, *x.shape[:2])
  if interpolation == 'nearest':
    return _sample_nearest(x, sx, sy)
  return _sample_bilinear(x, sx, sy)


# cv2.remap's element types; 2-D, or up to 4 channels.
_CV_WARP_DTYPES = (np.uint8, np.uint16, np.int16, np.float32, np.float64)


def _cv_warps(x: np.ndarray, interpolation: str) -> bool:
  if interpolation == 'bilinear':
    return True  # uint8 only, checked in _cv_warp as in _sample_bilinear.
  return (x.dtype.type in _CV_WARP_DTYPES
          and (x.ndim == 2 or (x.ndim == 3 and x.shape[2] <= 4)))


def _cv_warp(x: np.ndarray, matrix: np.ndarray, interpolation: str):
  if interpolation == 'bilinear' and x.dtype != np.uint8:
    raise ValueError(f'warp_affine: bilinear expects uint8, got {x.dtype}.')
  height, width = x.shape[:2]
  flags = cv2.INTER_LINEAR if interpolation == 'bilinear' else cv2.INTER_NEAREST
  out = cv2.warpAffine(np.ascontiguousarray(x), matrix, (width, height),
                       flags=flags, borderMode=cv2.BORDER_REFLECT_101)
  return out.reshape(x.shape)  # cv2 drops a trailing channel axis of 1.


# ----------------------------------------------------------------------------
# Resizing.


def resize_bicubic(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """`cv2.resize(..., INTER_CUBIC)` to size (height, width).

  Keys kernel with a = −0.75, half-pixel centres, replicated border, no
  antialiasing when shrinking. uint8 input gives uint8 output rounded to
  nearest (ties to even, as cv2 does) and saturated; float input gives float32.

  Each axis is a 4-tap weighted sum of gathered rows (the product with a
  banded weight matrix, without its zeros). A dense BLAS product was no
  faster alone and, with OpenBLAS threads competing with the reader threads,
  up to 20x slower on a busy 2-core host; it also grows with the input size.
  """
  out_h, out_w = (int(v) for v in size)
  if out_h <= 0 or out_w <= 0:
    raise ValueError(f'resize_bicubic: size must be positive, got {size}.')
  height, width = x.shape[:2]
  if (height, width) == (out_h, out_w):
    return x.copy() if x.dtype == np.uint8 else x.astype(np.float32)
  if _cv() and (x.ndim == 2 or x.shape[2] <= 512):
    src = x if x.dtype == np.uint8 else x.astype(np.float32)
    out = cv2.resize(np.ascontiguousarray(src), (out_w, out_h),
                     interpolation=cv2.INTER_CUBIC)
    return out.reshape((out_h, out_w) + x.shape[2:])
  y = x[..., None] if x.ndim == 2 else x
  # Work on (C, rows, cols) float32 and resample axis 1, transposing between
  # the two passes; the axis that shrinks more goes first.
  if out_h * width <= height * out_w:
    y = np.transpose(y, (2, 0, 1)).astype(np.float32)
    y = _resize_rows(y, out_h).transpose(0, 2, 1).copy()
    y = _resize_rows(y, out_w).transpose(2, 1, 0)
  else:
    y = np.transpose(y, (2, 1, 0)).astype(np.float32)
    y = _resize_rows(y, out_w).transpose(0, 2, 1).copy()
    y = _resize_rows(y, out_h).transpose(1, 2, 0)
  if x.ndim == 2:
    y = y[..., 0]
  if x.dtype == np.uint8:
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)
  return np.ascontiguousarray(y)


def cubic_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Source indices (out, 4) (border replicated) and weights (out, 4)."""
  scale = in_size / out_size
  pos = (np.arange(out_size) + 0.5) * scale - 0.5
  start = np.floor(pos)
  t = (pos - start).astype(np.float32)
  a = np.float32(_CUBIC_A)
  w0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
  w1 = ((a + 2) * t - (a + 3)) * t * t + 1
  w2 = ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1
  w3 = 1 - w0 - w1 - w2
  index = start.astype(np.int64)[:, None] + np.arange(-1, 3)[None, :]
  return np.clip(index, 0, in_size - 1), np.stack([w0, w1, w2, w3], axis=1)


def _resize_rows(y: np.ndarray, out_size: int) -> np.ndarray:
  """Bicubic resampling of axis 1 of a (C, N, M) float32 array."""
  if y.shape[1] == out_size:
    return y
  index, weight = cubic_taps(y.shape[1], out_size)
  weight = weight[None, :, :, None]
  out = np.take(y, index[:, 0], axis=1)
  out *= weight[:, :, 0]
  tap = np.empty_like(out)  # Reused: no large temporaries per tap.
  for k in range(1, 4):
    # mode='clip' (indices are in range anyway) lets take write to `out`
    # directly; the default mode buffers.
    np.take(y, index[:, k], axis=1, out=tap, mode='clip')
    tap *= weight[:, :, k]
    out += tap
  return out


def _check_image(image: np.ndarray) -> None:
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(
        f'augment: expected an (H, W, 3) uint8 image, got {image.shape}'
        f' {image.dtype}.'
    )
