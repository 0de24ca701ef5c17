"""Writes a tiny CHASE_DB1 with the publisher's layout: CHASEDB1.zip, flat.

28 RGB JPEGs Image_NNX.jpg and, per image, two 1-bit PNG label maps
(_1stHO.png, _2ndHO.png), as in the real 84-file archive; 24x25 (HxW)
pixels instead of 960x999.

  python -m ds2f_jax.datasets.chase_db1.dummy_data.make_dummy_data OUT_DIR [--extracted]
"""

import sys

from ds2f_jax.datasets import dummy_images

IDS = tuple(f'{n:02d}{eye}' for n in range(1, 15) for eye in 'LR')
HEIGHT, WIDTH = 24, 25


def files() -> dict[str, bytes]:
  out = {}
  for k, i in enumerate(IDS):
    photo, vessels, _ = dummy_images.fundus(HEIGHT, WIDTH, seed=k)
    out[f'Image_{i}.jpg'] = dummy_images.encode(photo, 'JPEG')
    out[f'Image_{i}_1stHO.png'] = dummy_images.encode(vessels, 'PNG', '1')
    out[f'Image_{i}_2ndHO.png'] = dummy_images.encode(vessels, 'PNG', '1')
  return out


def make(root: str, extracted: bool = False) -> None:
  if extracted:
    dummy_images.write_tree(root, files())
  else:
    dummy_images.write_zip(f'{root}/CHASEDB1.zip', files())


if __name__ == '__main__':
  make(sys.argv[1], extracted='--extracted' in sys.argv[2:])
