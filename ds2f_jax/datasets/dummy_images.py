"""Tiny synthetic fundus photos and label files for the builders' dummy data.

Each dataset's `dummy_data/make_dummy_data.py` uses these to write its
publisher's layout file-for-file (names, formats, modes, bit depths) at a few
dozen pixels per side, so that builder tests exercise every decoder without
shipping real data.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import zipfile
from collections.abc import Iterable

import numpy as np
from PIL import Image, ImageDraw


def fundus(height: int, width: int, seed: int):
  """(photo uint8 HxWx3, vessels bool HxW, fov bool HxW) of a toy retina.

  A bright red disc on black (the FOV) crossed by darker 1-2 px lines (the
  vessels), which never leave the disc.
  """
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:height, :width]
  cy, cx = (height - 1) / 2, (width - 1) / 2
  radius = 0.45 * min(height, width)
  fov = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
  canvas = Image.new('L', (width, height), 0)
  draw = ImageDraw.Draw(canvas)
  for _ in range(4):
    angle = rng.uniform(0, 2 * np.pi)
    length = rng.uniform(0.5, 0.9) * radius
    x0, y0 = cx + rng.uniform(-2, 2), cy + rng.uniform(-2, 2)
    draw.line([(x0, y0), (x0 + length * np.cos(angle),
                          y0 + length * np.sin(angle))],
              fill=255, width=int(rng.integers(1, 3)))
  vessels = (np.asarray(canvas) > 0) & fov
  photo = np.zeros((height, width, 3), np.uint8)
  shade = 200 - 40 * np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / radius
  photo[..., 0] = np.where(fov, shade, 0)
  photo[..., 1] = np.where(fov, shade * 0.45, 0)
  photo[..., 2] = np.where(fov, shade * 0.2, 0)
  photo[vessels] = (110, 30, 15)
  photo = np.clip(photo.astype(np.int16) +
                  rng.integers(-3, 4, photo.shape) * fov[..., None], 0, 255)
  return photo.astype(np.uint8), vessels, fov


def encode(array: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
  """Bytes of `array` in a Pillow format, converted to `mode` first.

  'P01' writes a palette image whose indices are 0/1 (index 1 white), the
  way some GIF label maps store binary masks.
  """
  if mode == 'P01':
    img = Image.fromarray((array > 0).astype(np.uint8), 'L').convert('P')
    img.putpalette([0, 0, 0, 255, 255, 255] + [0, 0, 0] * 254)
  elif mode == '1':
    img = Image.fromarray(array > 0)
  else:
    img = Image.fromarray(array)
    if mode is not None:
      img = img.convert(mode)
  buf = io.BytesIO()
  # Publishers' JPEGs are high quality; Pillow's default (75) rings far into
  # the black surround of a 25-pixel photo.
  opts = {'quality': 95, 'subsampling': 0} if fmt == 'JPEG' else {}
  img.save(buf, format=fmt, **opts)
  return buf.getvalue()


def binary(mask: np.ndarray, on: int = 255) -> np.ndarray:
  return np.where(mask, on, 0).astype(np.uint8)


def gz(data: bytes) -> bytes:
  return gzip.compress(data, mtime=0)


def write_tree(root: str, files: dict[str, bytes]) -> None:
  for rel, data in files.items():
    path = os.path.join(root, *rel.split('/'))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
      f.write(data)


def write_zip(path: str, files: dict[str, bytes]) -> None:
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as z:
    for rel, data in files.items():
      z.writestr(rel, data)


def write_tar(path: str, files: dict[str, bytes]) -> None:
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  with tarfile.open(path, 'w') as t:
    for rel, data in files.items():
      info = tarfile.TarInfo(rel)
      info.size = len(data)
      t.addfile(info, io.BytesIO(data))


def subset(files: dict[str, bytes], prefixes: Iterable[str]):
  prefixes = tuple(prefixes)
  return {k: v for k, v in files.items() if k.startswith(prefixes)}
