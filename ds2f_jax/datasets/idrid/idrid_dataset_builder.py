"""IDRiD "A. Segmentation": lesions and optic disc (Porwal et al. 2018)."""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds

from ds2f_jax.datasets import common

TRAIN_IDS = tuple(f'{n:02d}' for n in range(1, 55))
TEST_IDS = tuple(f'{n:02d}' for n in range(55, 82))

_EXPECTED = ('"A. Segmentation.zip", or its extracted folder with '
             '"1. Original Images/{a. Training Set,b. Testing Set}/'
             'IDRiD_NN.jpg" and "2. All Segmentation Groundtruths/..."')


@dataclasses.dataclass
class LesionConfig(tfds.core.BuilderConfig):
  code: str = ''  # File suffix: IDRiD_NN_<code>.tif.
  folder: str = ''  # Ground-truth folder of this lesion type.
  # Whether every image has a label file. For haemorrhages and soft exudates
  # the publisher ships files only for images that show the lesion.
  complete: bool = True

  @property
  def class_names(self) -> tuple[str, str]:
    return ('background', self.name)


_CONFIGS = [
    LesionConfig(name='hard_exudates', code='EX', folder='3. Hard Exudates',
                 description='Hard exudates (IDRiD_NN_EX.tif).'),
    LesionConfig(name='microaneurysms', code='MA',
                 folder='1. Microaneurysms',
                 description='Microaneurysms (IDRiD_NN_MA.tif).'),
    LesionConfig(name='haemorrhages', code='HE', folder='2. Haemorrhages',
                 complete=False,
                 description='Haemorrhages (IDRiD_NN_HE.tif); images without '
                 'a file have none.'),
    LesionConfig(name='soft_exudates', code='SE', folder='4. Soft Exudates',
                 complete=False,
                 description='Soft exudates (IDRiD_NN_SE.tif); images without '
                 'a file have none.'),
    LesionConfig(name='optic_disc', code='OD', folder='5. Optic Disc',
                 description='Optic disc (IDRiD_NN_OD.tif).'),
]


class Builder(tfds.core.GeneratorBasedBuilder):
  """IDRiD's official 54/27 split, one binary lesion type per config."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = _CONFIGS
  DEFAULT_CONFIG_NAME = 'hard_exudates'
  # The default config's; instances carry their own config's names.
  CLASS_NAMES = _CONFIGS[0].class_names
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download "A. Segmentation.zip" of IDRiD (Indian Diabetic Retinopathy Image
Dataset) from IEEE DataPort,
https://ieee-dataport.org/open-access/indian-diabetic-retinopathy-image-dataset-idrid
(free account), and put the zip, or the "A. Segmentation" folder extracted
from it, into the manual directory:
  <manual_dir>/A. Segmentation.zip
Needed inside: "1. Original Images/{a. Training Set,b. Testing Set}/
IDRiD_NN.jpg" and "2. All Segmentation Groundtruths/{a. Training Set,
b. Testing Set}/<lesion folder>/IDRiD_NN_<code>.tif".
"""

  def __init__(self, *, config=None, **kwargs):
    aliases = {c.code: c.name for c in _CONFIGS}
    aliases.update({c.folder.split('. ', 1)[1]: c.name for c in _CONFIGS})
    config = common.check_config_name(self.name, config, _CONFIGS, aliases)
    kwargs.setdefault('file_format', 'array_record')
    super().__init__(config=config, **kwargs)
    self.CLASS_NAMES = self.builder_config.class_names

  def _info(self) -> tfds.core.DatasetInfo:
    return common.dataset_info(
        self, homepage='https://idrid.grand-challenge.org/')

  def _split_generators(self, dl_manager):
    cfg = self.builder_config
    root, entries = common.open_manual_dir(
        dl_manager, self.name, _EXPECTED, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    images = common.find(entries, r'(?:^|/)IDRiD_(?P<id>\d\d)\.(?i:jpe?g)$')
    # The publisher's labels are TIFFs; re-encoded mirrors (PNG, JPEG) work.
    labels = common.find(
        entries,
        rf'(?:^|/)IDRiD_(?P<id>\d\d)_{cfg.code}\.(?i:tiff?|png|jpe?g)$')
    ids = TRAIN_IDS + TEST_IDS
    missing = [f'1. Original Images/.../IDRiD_{i}.jpg' for i in ids
               if i not in images]
    if cfg.complete or not labels:
      missing += [f'2. All Segmentation Groundtruths/.../{cfg.folder}/'
                  f'IDRiD_{i}_{cfg.code}.tif' for i in ids if i not in labels]
    if missing:
      raise common.missing_files_error(self.name, root, missing, 2 * len(ids),
                                       self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    return {
        'train': self._generate_examples(images, labels, TRAIN_IDS),
        'test': self._generate_examples(images, labels, TEST_IDS),
    }

  def _generate_examples(self, images, labels, ids):
    for i in ids:
      yield common.binary_example(images[i], labels.get(i), None)
