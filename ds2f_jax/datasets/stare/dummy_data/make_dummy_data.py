"""Writes a tiny STARE with the publisher's layout: three flat tars.

stare-images.tar holds imNNNN.ppm.gz (gzipped binary RGB PPM), labels-ah.tar
imNNNN.ah.ppm.gz and labels-vk.tar imNNNN.vk.ppm.gz (gzipped PPM, 0/255), for
the 20 labelled ids; 30x35 (HxW) pixels instead of 605x700.

  python -m ds2f_jax.datasets.stare.dummy_data.make_dummy_data OUT_DIR [--extracted]
"""

import sys

from ds2f_jax.datasets import dummy_images
from ds2f_jax.datasets.stare.stare_dataset_builder import IDS

HEIGHT, WIDTH = 30, 35


def files() -> dict[str, dict[str, bytes]]:
  """Files per tar."""
  out = {'stare-images': {}, 'labels-ah': {}, 'labels-vk': {}}
  for k, i in enumerate(IDS):
    photo, vessels, _ = dummy_images.fundus(HEIGHT, WIDTH, seed=k)
    label = dummy_images.encode(dummy_images.binary(vessels), 'PPM', 'RGB')
    out['stare-images'][f'{i}.ppm.gz'] = dummy_images.gz(
        dummy_images.encode(photo, 'PPM'))
    out['labels-ah'][f'{i}.ah.ppm.gz'] = dummy_images.gz(label)
    out['labels-vk'][f'{i}.vk.ppm.gz'] = dummy_images.gz(label)
  return out


def make(root: str, extracted: bool = False) -> None:
  for tar, members in files().items():
    if extracted:
      dummy_images.write_tree(f'{root}/{tar}', members)
    else:
      dummy_images.write_tar(f'{root}/{tar}.tar', members)


if __name__ == '__main__':
  make(sys.argv[1], extracted='--extracted' in sys.argv[2:])
