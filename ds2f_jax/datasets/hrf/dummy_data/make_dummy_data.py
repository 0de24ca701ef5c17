"""Writes a tiny HRF with the layout of the publisher's all.zip.

images/NN_dr.JPG and images/NN_{g,h}.jpg (RGB JPEG; the extension's case
differs by group, as published), manual1/NN_X.tif (8-bit grey 0/255) and
mask/NN_X_mask.tif (RGB 0/255), NN = 01..15; 32x48 (HxW) pixels instead of
2336x3504.

  python -m ds2f_jax.datasets.hrf.dummy_data.make_dummy_data OUT_DIR [--extracted]
"""

import sys

from ds2f_jax.datasets import dummy_images

HEIGHT, WIDTH = 32, 48


def files() -> dict[str, bytes]:
  out = {}
  for k, group in enumerate(('dr', 'g', 'h')):
    ext = 'JPG' if group == 'dr' else 'jpg'
    for n in range(1, 16):
      photo, vessels, fov = dummy_images.fundus(HEIGHT, WIDTH, seed=16 * k + n)
      i = f'{n:02d}_{group}'
      out[f'images/{i}.{ext}'] = dummy_images.encode(photo, 'JPEG')
      out[f'manual1/{i}.tif'] = dummy_images.encode(
          dummy_images.binary(vessels), 'TIFF', 'L')
      out[f'mask/{i}_mask.tif'] = dummy_images.encode(
          dummy_images.binary(fov), 'TIFF', 'RGB')
  return out


def make(root: str, extracted: bool = False) -> None:
  if extracted:
    dummy_images.write_tree(root, files())
  else:
    dummy_images.write_zip(f'{root}/all.zip', files())


if __name__ == '__main__':
  make(sys.argv[1], extracted='--extracted' in sys.argv[2:])
