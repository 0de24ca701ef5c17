"""HRF builder on a dummy all.zip."""

import os

import numpy as np
import pytest

from ds2f_jax.datasets import dummy_images
from ds2f_jax.datasets import testing
from ds2f_jax.datasets.hrf import hrf_dataset_builder as hrf
from ds2f_jax.datasets.hrf.dummy_data import make_dummy_data


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  manual = tmp_path_factory.mktemp('hrf_manual')
  make_dummy_data.make(os.fspath(manual))
  return testing.build(hrf.Builder, manual,
                       tmp_path_factory.mktemp('hrf_data'))


def _seed(name):
  stem = name.rsplit('.', 1)[0]
  n, group = stem.split('_')
  return 16 * ('dr', 'g', 'h').index(group) + int(n)


def test_split_is_ids_01_to_05_of_each_group(built):
  train = testing.examples(built, 'train')
  test = testing.examples(built, 'test')
  assert len(train) == 15 and len(test) == 30
  assert {n.split('.')[0] for n in train} == set(hrf.TRAIN_IDS)
  assert {n.split('.')[0] for n in test} == set(hrf.TEST_IDS)
  # The publisher's extension case is kept in file_name.
  assert '01_dr.JPG' in train and '01_g.jpg' in train


@pytest.mark.parametrize('split', ['train', 'test'])
def test_features_match_the_source_files(built, split):
  h, w = make_dummy_data.HEIGHT, make_dummy_data.WIDTH
  for name, ex in testing.examples(built, split).items():
    photo, vessels, fov = dummy_images.fundus(h, w, seed=_seed(name))
    assert ex['image'].shape == (h, w, 3) and ex['image'].dtype == np.uint8
    # JPEG at quality 95: close to the drawn photo, not equal.
    assert np.abs(ex['image'].astype(int) - photo).mean() < 3
    np.testing.assert_array_equal(ex['mask'][..., 0], vessels)  # Grey TIFF.
    np.testing.assert_array_equal(ex['fov'][..., 0], fov)  # RGB TIFF.
