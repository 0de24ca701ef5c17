"""Writes a tiny REFUGE with the publisher's layout: REFUGE2.zip of six zips.

Training400/{Glaucoma,Non-Glaucoma}/{g,n}NNNN.jpg (RGB JPEG),
Annotation-Training400/Disc_Cup_Masks/{Glaucoma,Non-Glaucoma}/{g,n}NNNN.bmp
(8-bit BMP: 0 cup, 128 disc rim, 255 background), REFUGE-Validation400/
VNNNN.jpg with REFUGE-Validation400-GT/Disc_Cup_Masks/VNNNN.bmp, Test400/
TNNNN.jpg with REFUGE-Test-GT/Disc_Cup_Masks/{G,N}/TNNNN.bmp; 32x33 (HxW) for
train (real 2056x2124) and 26x26 for validation and test (real 1634x1634).

  python -m ds2f_jax.datasets.refuge.dummy_data.make_dummy_data OUT_DIR \
      [--six-zips|--extracted]
"""

import io
import sys
import zipfile

import numpy as np

from ds2f_jax.datasets import dummy_images


def _pair(height, width, seed):
  photo, _, fov = dummy_images.fundus(height, width, seed)
  yy, xx = np.mgrid[:height, :width]
  cy, cx = height * 0.5, width * 0.6
  r = np.hypot((yy - cy) / 5.0, (xx - cx) / 4.5)
  grey = np.full((height, width), 255, np.uint8)
  grey[r <= 1] = 128
  grey[r <= 0.5] = 0
  photo[r <= 1] = (240, 200, 120)
  return (dummy_images.encode(photo, 'JPEG'),
          dummy_images.encode(grey, 'BMP', 'L'))


def zips() -> dict[str, dict[str, bytes]]:
  out = {n: {} for n in ('REFUGE-Training400', 'Annotation-Training400',
                         'REFUGE-Validation400', 'REFUGE-Validation400-GT',
                         'REFUGE-Test400', 'REFUGE-Test-GT')}
  for n in range(1, 401):
    group, prefix = ('Glaucoma', 'g') if n <= 40 else ('Non-Glaucoma', 'n')
    i = f'{prefix}{n if n <= 40 else n - 40:04d}'
    jpg, bmp = _pair(32, 33, n)
    out['REFUGE-Training400'][f'Training400/{group}/{i}.jpg'] = jpg
    out['Annotation-Training400'][
        f'Annotation-Training400/Disc_Cup_Masks/{group}/{i}.bmp'] = bmp
    jpg, bmp = _pair(26, 26, 1000 + n)
    out['REFUGE-Validation400'][f'REFUGE-Validation400/V{n:04d}.jpg'] = jpg
    out['REFUGE-Validation400-GT'][
        f'REFUGE-Validation400-GT/Disc_Cup_Masks/V{n:04d}.bmp'] = bmp
    jpg, bmp = _pair(26, 26, 2000 + n)
    out['REFUGE-Test400'][f'Test400/T{n:04d}.jpg'] = jpg
    g = 'G' if n % 10 == 0 else 'N'
    out['REFUGE-Test-GT'][
        f'REFUGE-Test-GT/Disc_Cup_Masks/{g}/T{n:04d}.bmp'] = bmp
  return out


def make(root: str, mode: str = 'refuge2') -> None:
  """mode: 'refuge2' (one zip of zips), 'six_zips' or 'extracted'."""
  parts = zips()
  if mode == 'extracted':
    for members in parts.values():
      dummy_images.write_tree(root, members)
  elif mode == 'six_zips':
    for name, members in parts.items():
      dummy_images.write_zip(f'{root}/{name}.zip', members)
  else:
    blobs = {}
    for name, members in parts.items():
      buf = io.BytesIO()
      with zipfile.ZipFile(buf, 'w', zipfile.ZIP_STORED) as z:
        for rel, data in members.items():
          z.writestr(rel, data)
      blobs[f'REFUGE2/{name}.zip'] = buf.getvalue()
    dummy_images.write_zip(f'{root}/REFUGE2.zip', blobs)


if __name__ == '__main__':
  flag = sys.argv[2] if len(sys.argv) > 2 else ''
  make(sys.argv[1], {'--six-zips': 'six_zips',
                     '--extracted': 'extracted'}.get(flag, 'refuge2'))
