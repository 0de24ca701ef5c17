"""DRIVE builder on dummy data: original and grand-challenge layouts."""

import os

import numpy as np
from PIL import Image
import pytest

from ds2f_jax.datasets import dummy_images
from ds2f_jax.datasets import testing
from ds2f_jax.datasets.drive import drive_dataset_builder as drive
from ds2f_jax.datasets.drive.dummy_data import make_dummy_data


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  manual = tmp_path_factory.mktemp('drive_manual')
  make_dummy_data.make(os.fspath(manual))
  return testing.build(drive.Builder, manual,
                       tmp_path_factory.mktemp('drive_data'))


def test_official_split(built):
  assert sorted(testing.examples(built, 'train')) == [
      f'{n}_training.tif' for n in range(21, 41)]
  assert sorted(testing.examples(built, 'test')) == [
      f'{n:02d}_test.tif' for n in range(1, 21)]


@pytest.mark.parametrize('split', ['train', 'test'])
def test_features_match_the_source_files(built, split):
  h, w = make_dummy_data.HEIGHT, make_dummy_data.WIDTH
  for name, ex in testing.examples(built, split).items():
    photo, vessels, fov = dummy_images.fundus(h, w, seed=int(name[:2]))
    # TIFF is lossless: the photo comes back bit for bit.
    np.testing.assert_array_equal(ex['image'], photo)
    assert ex['mask'].shape == ex['fov'].shape == (h, w, 1)
    assert ex['mask'].dtype == ex['fov'].dtype == np.uint8
    # Labels are palette GIFs with indices 0/1, FOVs grey GIFs 0/255.
    np.testing.assert_array_equal(ex['mask'][..., 0], vessels)
    np.testing.assert_array_equal(ex['fov'][..., 0], fov)


def test_grand_challenge_release_explains_missing_test_labels(tmp_path):
  manual = tmp_path / 'manual'
  make_dummy_data.make(os.fspath(manual), grand_challenge=True)
  with pytest.raises(FileNotFoundError) as e:
    testing.build(drive.Builder, manual, tmp_path / 'data')
  msg = str(e.value)
  assert '20 of 120 expected files are missing' in msg
  assert 'test/1st_manual/01_manual1.gif' in msg
  assert 'grand-challenge release withholds them' in msg


def test_grand_challenge_zips_plus_test_labels_build(tmp_path):
  manual = tmp_path / 'manual'
  make_dummy_data.make(os.fspath(manual), grand_challenge=True)
  labels = dummy_images.subset(make_dummy_data.files(prefix=''),
                               ['test/1st_manual/'])
  dummy_images.write_tree(os.fspath(manual), labels)
  b = testing.build(drive.Builder, manual, tmp_path / 'data')
  assert b.info.splits['train'].num_examples == 20
  assert b.info.splits['test'].num_examples == 20


def test_fov_size_mismatch_names_both_files(tmp_path):
  manual = tmp_path / 'manual'
  make_dummy_data.make(os.fspath(manual), extracted=True)
  bad = manual / 'DRIVE' / 'test' / 'mask' / '05_test_mask.gif'
  Image.new('L', (30, 29)).save(bad)
  with pytest.raises(ValueError, match=r'05_test\.tif is 28x29 .*'
                     r'05_test_mask\.gif is 30x29'):
    testing.build(drive.Builder, manual, tmp_path / 'data')
