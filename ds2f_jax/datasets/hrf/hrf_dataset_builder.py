"""HRF: High-Resolution Fundus image database (Budai et al. 2013)."""

from __future__ import annotations

import tensorflow_datasets as tfds

from ds2f_jax.datasets import common

# 15 healthy (h), 15 glaucomatous (g), 15 diabetic retinopathy (dr) eyes.
IDS = tuple(f'{n:02d}_{c}' for c in ('dr', 'g', 'h') for n in range(1, 16))
TRAIN_IDS = tuple(i for i in IDS if int(i[:2]) <= 5)
TEST_IDS = tuple(i for i in IDS if int(i[:2]) > 5)

_EXPECTED = ('all.zip, or its extracted folders images/NN_X.jpg|JPG, '
             'manual1/NN_X.tif and mask/NN_X_mask.tif (NN = 01..15, '
             'X = dr|g|h)')


class Builder(tfds.core.GeneratorBasedBuilder):
  """HRF with the common 15/30 split (ids 01-05 of each class train)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  CLASS_NAMES = common.VESSEL_CLASSES
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download all.zip ("the whole dataset", no registration) from
https://www5.cs.fau.de/research/data/fundus-images/ and put it, or the
folders images/, manual1/ and mask/ extracted from it, into the manual
directory:
  <manual_dir>/all.zip
The per-group archives of the same page (healthy.zip, glaucoma.zip,
diabetic_retinopathy.zip and their manual-segmentation and FOV-mask zips) work
too when all of them are there.
"""

  def __init__(self, **kwargs):
    kwargs.setdefault('file_format', 'array_record')
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return common.dataset_info(
        self, homepage='https://www5.cs.fau.de/research/data/fundus-images/')

  def _split_generators(self, dl_manager):
    root, entries = common.open_manual_dir(
        dl_manager, self.name, _EXPECTED, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    images = common.find(
        entries, r'(?:^|/)(?P<id>\d\d_(?:dr|g|h))\.(?i:jpe?g)$')
    labels = common.find(
        entries, r'(?:^|/)(?P<id>\d\d_(?:dr|g|h))\.(?i:tiff?)$')
    fovs = common.find(
        entries, r'(?:^|/)(?P<id>\d\d_(?:dr|g|h))_mask\.(?i:tiff?)$')
    missing = ([f'images/{i}.jpg' for i in IDS if i not in images] +
               [f'manual1/{i}.tif' for i in IDS if i not in labels] +
               [f'mask/{i}_mask.tif' for i in IDS if i not in fovs])
    if missing:
      raise common.missing_files_error(self.name, root, missing, 3 * len(IDS),
                                       self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    return {
        'train': self._generate_examples(images, labels, fovs, TRAIN_IDS),
        'test': self._generate_examples(images, labels, fovs, TEST_IDS),
    }

  def _generate_examples(self, images, labels, fovs, ids):
    for i in ids:
      yield common.binary_example(images[i], labels[i], fovs[i])
