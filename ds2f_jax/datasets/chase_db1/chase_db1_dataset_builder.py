"""CHASE_DB1: retinal vessels of 14 children, both eyes (Fraz et al. 2012)."""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds

from ds2f_jax.datasets import common

IDS = tuple(f'{n:02d}{eye}' for n in range(1, 15) for eye in 'LR')

_EXPECTED = ('CHASEDB1.zip, or its 84 extracted files Image_NNX.jpg, '
             'Image_NNX_1stHO.png, Image_NNX_2ndHO.png (NN = 01..14, X = L|R)')


@dataclasses.dataclass
class ChaseConfig(tfds.core.BuilderConfig):
  train_ids: tuple[str, ...] = ()


class Builder(tfds.core.GeneratorBasedBuilder):
  """CHASE_DB1 with the first observer's labels and a derived FOV."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  CLASS_NAMES = common.VESSEL_CLASSES
  BUILDER_CONFIGS = [
      ChaseConfig(
          name='train20_test8',
          description='Train on Image_01L..10R (20), test on 11L..14R (8).',
          train_ids=IDS[:20]),
      ChaseConfig(
          name='train8_test20',
          description='Train on Image_11L..14R (8), test on 01L..10R (20).',
          train_ids=IDS[20:]),
  ]
  DEFAULT_CONFIG_NAME = 'train20_test8'
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download CHASEDB1.zip (2.5 MB, 84 files, no registration) from the CHASE_DB1
page of Kingston University, https://blogs.kingston.ac.uk/retinal/chasedb1/
(archived at https://researchdata.kingston.ac.uk/96/), and put the zip, or the
84 files extracted from it, into the manual directory:
  <manual_dir>/CHASEDB1.zip
"""

  def __init__(self, *, config=None, **kwargs):
    config = common.check_config_name(self.name, config,
                                      self.BUILDER_CONFIGS)
    kwargs.setdefault('file_format', 'array_record')
    super().__init__(config=config, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return common.dataset_info(
        self, homepage='https://blogs.kingston.ac.uk/retinal/chasedb1/')

  def _split_generators(self, dl_manager):
    root, entries = common.open_manual_dir(
        dl_manager, self.name, _EXPECTED, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    images = common.find(entries, r'(?:^|/)Image_(?P<id>\d\d[LR])\.(?i:jpg)$')
    labels = common.find(entries,
                         r'(?:^|/)Image_(?P<id>\d\d[LR])_1stHO\.(?i:png)$')
    missing = ([f'Image_{i}.jpg' for i in IDS if i not in images] +
               [f'Image_{i}_1stHO.png' for i in IDS if i not in labels])
    if missing:
      raise common.missing_files_error(self.name, root, missing, 2 * len(IDS),
                                       self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    train = self.builder_config.train_ids
    test = tuple(i for i in IDS if i not in train)
    return {
        'train': self._generate_examples(images, labels, train),
        'test': self._generate_examples(images, labels, test),
    }

  def _generate_examples(self, images, labels, ids):
    for i in ids:
      yield common.binary_example(images[i], labels[i], None)
