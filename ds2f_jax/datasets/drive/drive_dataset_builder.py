"""DRIVE: Digital Retinal Images for Vessel Extraction (Staal et al. 2004)."""

from __future__ import annotations

import tensorflow_datasets as tfds

from ds2f_jax.datasets import common

TRAIN_IDS = tuple(f'{n:02d}' for n in range(21, 41))
TEST_IDS = tuple(f'{n:02d}' for n in range(1, 21))

_EXPECTED = ('DRIVE.zip (or training.zip + test.zip), or the extracted '
             'folders training/{images,1st_manual,mask} and '
             'test/{images,1st_manual,mask}')
_NO_TEST_LABELS = (
    'The test labels (test/1st_manual/NN_manual1.gif) are missing: the '
    'grand-challenge release withholds them. They are part of the original '
    'DRIVE.zip (DRIVE/test/1st_manual); add that folder (or the zip) to the '
    'manual directory.')


class Builder(tfds.core.GeneratorBasedBuilder):
  """DRIVE's official split with the first observer's labels and FOV masks."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  CLASS_NAMES = common.VESSEL_CLASSES
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Register at https://drive.grand-challenge.org/ and download from its Download
page training.zip and test.zip, or use the original DRIVE.zip (Image Sciences
Institute, Utrecht), and put the zip files, or the folders extracted from
them, into the manual directory:
  <manual_dir>/DRIVE.zip            (or training.zip and test.zip)
Needed inside: training/images/NN_training.tif, training/1st_manual/
NN_manual1.gif, training/mask/NN_training_mask.gif (NN = 21..40) and the same
for test (NN = 01..20, NN_test.tif, NN_test_mask.gif). The grand-challenge
test.zip lacks test/1st_manual (the test labels); they come with the original
DRIVE.zip.
"""

  def __init__(self, **kwargs):
    kwargs.setdefault('file_format', 'array_record')
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return common.dataset_info(
        self, homepage='https://drive.grand-challenge.org/')

  def _split_generators(self, dl_manager):
    root, entries = common.open_manual_dir(
        dl_manager, self.name, _EXPECTED, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    images = common.find(
        entries, r'(?:^|/)(?P<id>\d\d)_(?:training|test)\.(?i:tiff?)$')
    labels = common.find(entries, r'(?:^|/)(?P<id>\d\d)_manual1\.(?i:gif)$')
    fovs = common.find(
        entries, r'(?:^|/)(?P<id>\d\d)_(?:training|test)_mask\.(?i:gif)$')
    missing = []
    for ids, part in ((TRAIN_IDS, 'training'), (TEST_IDS, 'test')):
      missing += [f'{part}/images/{i}_{part}.tif' for i in ids
                  if i not in images]
      missing += [f'{part}/1st_manual/{i}_manual1.gif' for i in ids
                  if i not in labels]
      missing += [f'{part}/mask/{i}_{part}_mask.gif' for i in ids
                  if i not in fovs]
    if missing:
      instructions = self.MANUAL_DOWNLOAD_INSTRUCTIONS
      if all(i not in labels for i in TEST_IDS):
        instructions = f'{_NO_TEST_LABELS}\n{instructions}'
      raise common.missing_files_error(self.name, root, missing,
                                       3 * (len(TRAIN_IDS) + len(TEST_IDS)),
                                       instructions)
    return {
        'train': self._generate_examples(images, labels, fovs, TRAIN_IDS),
        'test': self._generate_examples(images, labels, fovs, TEST_IDS),
    }

  def _generate_examples(self, images, labels, fovs, ids):
    for i in ids:
      yield common.binary_example(images[i], labels[i], fovs[i])
