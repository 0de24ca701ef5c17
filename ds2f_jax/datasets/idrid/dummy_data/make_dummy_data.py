"""Writes a tiny IDRiD "A. Segmentation.zip" with the publisher's layout.

A. Segmentation/1. Original Images/{a. Training Set,b. Testing Set}/
IDRiD_NN.jpg (RGB JPEG; NN = 01..54 train, 55..81 test) and
A. Segmentation/2. All Segmentation Groundtruths/<same set>/<k. Lesion>/
IDRiD_NN_<code>.tif, lesions drawn in pure red on black (RGB TIFF, grey 76),
as published. Haemorrhage files are left out for one image and soft-exudate
files for every odd id, as the publisher ships no file where the lesion is
absent. 32x48 (HxW) pixels instead of 2848x4288.

  python -m ds2f_jax.datasets.idrid.dummy_data.make_dummy_data OUT_DIR [--extracted]
"""

import sys

import numpy as np

from ds2f_jax.datasets import dummy_images

HEIGHT, WIDTH = 32, 48
LESIONS = (('1. Microaneurysms', 'MA'), ('2. Haemorrhages', 'HE'),
           ('3. Hard Exudates', 'EX'), ('4. Soft Exudates', 'SE'),
           ('5. Optic Disc', 'OD'))


def has_label(n: int, code: str) -> bool:
  return not ((code == 'HE' and n == 81) or (code == 'SE' and n % 2))


def lesion(n: int, code: str) -> np.ndarray:
  """A small blob per (image, lesion type), inside the toy FOV."""
  yy, xx = np.mgrid[:HEIGHT, :WIDTH]
  k = [c for _, c in LESIONS].index(code)
  cy, cx = HEIGHT / 2 + 4 * np.sin(n + k), WIDTH / 2 + 6 * np.cos(n + 2 * k)
  return np.hypot(yy - cy, xx - cx) <= 1.5 + k % 3


def files() -> dict[str, bytes]:
  out = {}
  base = 'A. Segmentation'
  for n in range(1, 82):
    part = 'a. Training Set' if n <= 54 else 'b. Testing Set'
    photo, _, _ = dummy_images.fundus(HEIGHT, WIDTH, seed=n)
    out[f'{base}/1. Original Images/{part}/IDRiD_{n:02d}.jpg'] = (
        dummy_images.encode(photo, 'JPEG'))
    for folder, code in LESIONS:
      if not has_label(n, code):
        continue
      red = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
      red[lesion(n, code), 0] = 255
      out[f'{base}/2. All Segmentation Groundtruths/{part}/{folder}/'
          f'IDRiD_{n:02d}_{code}.tif'] = dummy_images.encode(red, 'TIFF')
  return out


def make(root: str, extracted: bool = False) -> None:
  if extracted:
    dummy_images.write_tree(root, files())
  else:
    dummy_images.write_zip(f'{root}/A. Segmentation.zip', files())


if __name__ == '__main__':
  make(sys.argv[1], extracted='--extracted' in sys.argv[2:])
