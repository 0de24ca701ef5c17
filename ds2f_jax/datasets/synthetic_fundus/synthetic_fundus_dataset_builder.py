"""synthetic_fundus: the embedded default dataset (no download needed).

Procedural fundus-like photographs with exact binary vessel masks and
field-of-view masks (see `fundus_generator.py`). Builds in seconds and, like
every builder of this project, without TensorFlow when prepared with
`file_format='array_record'`.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from . import fundus_generator


@dataclasses.dataclass(eq=False)
class SyntheticFundusConfig(tfds.core.BuilderConfig):
  """Image size (height, width) and the number of examples per split."""

  height: int = 256
  width: int = 256
  num_train: int = 96
  num_validation: int = 16
  num_test: int = 16


def _png(array: np.ndarray) -> bytes:
  # Without TensorFlow, tfds Image features take encoded bytes, not arrays.
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='PNG', compress_level=1)
  return buffer.getvalue()


class Builder(tfds.core.GeneratorBasedBuilder):
  """Synthetic retinal vessel segmentation."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      SyntheticFundusConfig(
          name='default',
          description='256x256 images; 96 train, 16 validation, 16 test.',
      ),
      SyntheticFundusConfig(
          name='tiny',
          description='80x96 (HxW) images; 8 train, 3 validation, 5 test.'
          ' For fast tests.',
          height=80,
          width=96,
          num_train=8,
          num_validation=3,
          num_test=5,
      ),
  ]
  DEFAULT_CONFIG_NAME = 'default'
  CLASS_NAMES = ('background', 'vessel')

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(
                shape=(None, None, 3), dtype=np.uint8, encoding_format='png'
            ),
            'mask': tfds.features.Image(
                shape=(None, None, 1), dtype=np.uint8, encoding_format='png'
            ),
            'fov': tfds.features.Image(
                shape=(None, None, 1), dtype=np.uint8, encoding_format='png'
            ),
            'file_name': tfds.features.Text(),
        }),
        supervised_keys=None,
        homepage=None,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    cfg = self.builder_config
    return {
        'train': self._generate_examples('train', cfg.num_train),
        'validation': self._generate_examples('validation', cfg.num_validation),
        'test': self._generate_examples('test', cfg.num_test),
    }

  def _generate_examples(self, split: str, count: int):
    cfg = self.builder_config
    for index in range(count):
      example = fundus_generator.generate(
          cfg.height, cfg.width, fundus_generator.example_seed(split, index)
      )
      name = f'{split}_{index:04d}.png'
      yield name, {
          'image': _png(example.image),
          'mask': _png(example.mask),
          'fov': _png(example.fov),
          'file_name': name,
      }
