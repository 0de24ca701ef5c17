"""REFUGE builder on a dummy REFUGE2.zip (a zip of the six official zips)."""

import os

import numpy as np
import pytest

from ds2f_jax.datasets import common
from ds2f_jax.datasets import testing
from ds2f_jax.datasets.refuge import refuge_dataset_builder as refuge
from ds2f_jax.datasets.refuge.dummy_data import make_dummy_data


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  manual = tmp_path_factory.mktemp('refuge_manual')
  make_dummy_data.make(os.fspath(manual))
  return testing.build(refuge.Builder, manual,
                       tmp_path_factory.mktemp('refuge_data'))


def test_official_splits(built):
  assert refuge.Builder.CLASS_NAMES == ('background', 'disc', 'cup')
  train = testing.examples(built, 'train')
  assert sorted(train) == sorted(f'{i}.jpg' for i in refuge.SPLIT_IDS['train'])
  for split in ('validation', 'test'):
    assert built.info.splits[split].num_examples == 400


@pytest.mark.parametrize('split,shape', [('train', (32, 33)),
                                         ('validation', (26, 26)),
                                         ('test', (26, 26))])
def test_masks_hold_disc_and_cup_ids(built, split, shape):
  source = built.as_data_source(split)
  for j in (0, 1, len(source) - 1):
    ex = source[j]
    assert ex['image'].shape == (*shape, 3)
    mask = ex['mask'][..., 0]
    assert mask.shape == shape and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 1, 2}
    # The toy labels: rim where 0.5 < r <= 1, cup where r <= 0.5.
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    r = np.hypot((yy - shape[0] * 0.5) / 5.0, (xx - shape[1] * 0.6) / 4.5)
    expected = np.where(r <= 0.5, 2, np.where(r <= 1, 1, 0))
    np.testing.assert_array_equal(mask, expected)
    # The cup sits inside the disc, the disc inside the derived FOV.
    assert ex['fov'][..., 0][mask > 0].all()


def test_label_levels_map_to_nearest_class():
  grey = np.array([[255, 250, 140, 128, 120], [60, 10, 0, 200, 70]], np.uint8)
  np.testing.assert_array_equal(
      common.quantize_levels(grey, refuge.LEVELS),
      [[0, 0, 1, 1, 1], [2, 2, 2, 0, 1]])
