"""REFUGE (MICCAI 2018): optic disc and cup segmentation (Orlando et al.)."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from ds2f_jax.datasets import common

SPLIT_IDS = {
    'train': (tuple(f'g{n:04d}' for n in range(1, 41)) +
              tuple(f'n{n:04d}' for n in range(1, 361))),
    'validation': tuple(f'V{n:04d}' for n in range(1, 401)),
    'test': tuple(f'T{n:04d}' for n in range(1, 401)),
}
# Grey level of the published label maps -> class id (CLASS_NAMES order).
LEVELS = {255: 0, 128: 1, 0: 2}

_EXPECTED = ('REFUGE2.zip, or the six zips inside it (REFUGE-Training400, '
             'Annotation-Training400, REFUGE-Validation400, '
             'REFUGE-Validation400-GT, REFUGE-Test400, REFUGE-Test-GT), or '
             'their extracted folders')


class Builder(tfds.core.GeneratorBasedBuilder):
  """REFUGE's official 400/400/400 split with disc and cup labels."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  CLASS_NAMES = ('background', 'disc', 'cup')
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Register at https://refuge.grand-challenge.org/ and download REFUGE2.zip from
its REFUGE2Download page (the 2018 release, also at
https://ai.baidu.com/broad/download?dataset=gon). Put REFUGE2.zip, or the six
zips inside it, or the folders extracted from those, into the manual
directory:
  <manual_dir>/REFUGE2.zip
  (or <manual_dir>/REFUGE-Training400.zip, Annotation-Training400.zip,
   REFUGE-Validation400.zip, REFUGE-Validation400-GT.zip, REFUGE-Test400.zip,
   REFUGE-Test-GT.zip)
Needed inside: Training400/{Glaucoma,Non-Glaucoma}/{g,n}NNNN.jpg,
Annotation-Training400/Disc_Cup_Masks/.../{g,n}NNNN.bmp,
REFUGE-Validation400/VNNNN.jpg, REFUGE-Validation400-GT/Disc_Cup_Masks/
VNNNN.bmp, Test400/TNNNN.jpg, REFUGE-Test-GT/Disc_Cup_Masks/{G,N}/TNNNN.bmp.
"""

  def __init__(self, **kwargs):
    kwargs.setdefault('file_format', 'array_record')
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return common.dataset_info(
        self, homepage='https://refuge.grand-challenge.org/')

  def _split_generators(self, dl_manager):
    root, entries = common.open_manual_dir(
        dl_manager, self.name, _EXPECTED, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    images = common.find(entries, r'(?:^|/)(?P<id>[gnVT]\d{4})\.(?i:jpg)$')
    labels = common.find(entries, r'(?:^|/)(?P<id>[gnVT]\d{4})\.(?i:bmp)$')
    all_ids = [i for ids in SPLIT_IDS.values() for i in ids]
    missing = ([f'{i}.jpg' for i in all_ids if i not in images] +
               [f'{i}.bmp' for i in all_ids if i not in labels])
    if missing:
      raise common.missing_files_error(self.name, root, missing,
                                       2 * len(all_ids),
                                       self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    return {
        split: self._generate_examples(images, labels, ids)
        for split, ids in SPLIT_IDS.items()
    }

  def _generate_examples(self, images, labels, ids):
    for i in ids:
      image, label = images[i], labels[i]
      img = common.read_image(image)
      grey, _ = common.decode_gray(label.read(), label.name)
      common.check_same_size(img, image.name, grey, label.name)
      mask = common.quantize_levels(grey, LEVELS).astype(np.uint8)
      yield i, common.example(image.basename, img, mask,
                              common.derive_fov(img))
