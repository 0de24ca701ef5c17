"""STARE: the 20 vessel-labelled photos of Hoover et al. (2000)."""

from __future__ import annotations

import tensorflow_datasets as tfds

from ds2f_jax.datasets import common

# The labelled images, in the order of the usual 10/10 split (Maninis et al.,
# DRIU, 2016): the first ten train, the last ten test.
IDS = ('im0001', 'im0002', 'im0003', 'im0004', 'im0005', 'im0044', 'im0077',
       'im0081', 'im0082', 'im0139', 'im0162', 'im0163', 'im0235', 'im0236',
       'im0239', 'im0240', 'im0255', 'im0291', 'im0319', 'im0324')
TRAIN_IDS, TEST_IDS = IDS[:10], IDS[10:]

_EXPECTED = ('stare-images.tar and labels-ah.tar, or their extracted files '
             'imNNNN.ppm(.gz) and imNNNN.ah.ppm(.gz)')


class Builder(tfds.core.GeneratorBasedBuilder):
  """STARE with Adam Hoover's labels (ah) and a derived FOV."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  CLASS_NAMES = common.VESSEL_CLASSES
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
From the STARE vessel page, https://cecas.clemson.edu/~ahoover/stare/probing/
(no registration), download stare-images.tar (the 20 labelled photos) and
labels-ah.tar (Adam Hoover's labels), and put both tars, or the imNNNN.ppm.gz
and imNNNN.ah.ppm.gz files extracted from them (gunzipped .ppm work too),
into the manual directory:
  <manual_dir>/stare-images.tar
  <manual_dir>/labels-ah.tar
"""

  def __init__(self, **kwargs):
    kwargs.setdefault('file_format', 'array_record')
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return common.dataset_info(
        self, homepage='https://cecas.clemson.edu/~ahoover/stare/')

  def _split_generators(self, dl_manager):
    root, entries = common.open_manual_dir(
        dl_manager, self.name, _EXPECTED, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    images = common.find(entries, r'(?:^|/)(?P<id>im\d{4})\.(?i:ppm)(?:\.gz)?$')
    labels = common.find(entries,
                         r'(?:^|/)(?P<id>im\d{4})\.ah\.(?i:ppm)(?:\.gz)?$')
    missing = ([f'stare-images.tar:{i}.ppm.gz' for i in IDS
                if i not in images] +
               [f'labels-ah.tar:{i}.ah.ppm.gz' for i in IDS if i not in labels])
    if missing:
      raise common.missing_files_error(self.name, root, missing, 2 * len(IDS),
                                       self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    return {
        'train': self._generate_examples(images, labels, TRAIN_IDS),
        'test': self._generate_examples(images, labels, TEST_IDS),
    }

  def _generate_examples(self, images, labels, ids):
    for i in ids:
      yield common.binary_example(images[i], labels[i], None)
