"""STARE builder on dummy tars of gzipped PPMs, and on extracted files."""

import gzip
import os

import numpy as np
import pytest

from ds2f_jax.datasets import dummy_images
from ds2f_jax.datasets import testing
from ds2f_jax.datasets.stare import stare_dataset_builder as stare
from ds2f_jax.datasets.stare.dummy_data import make_dummy_data


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  manual = tmp_path_factory.mktemp('stare_manual')
  make_dummy_data.make(os.fspath(manual))
  return testing.build(stare.Builder, manual,
                       tmp_path_factory.mktemp('stare_data'))


def test_split_is_ten_and_ten(built):
  assert sorted(testing.examples(built, 'train')) == [
      f'{i}.ppm.gz' for i in stare.IDS[:10]]
  assert sorted(testing.examples(built, 'test')) == [
      f'{i}.ppm.gz' for i in stare.IDS[10:]]


@pytest.mark.parametrize('split', ['train', 'test'])
def test_features_match_the_source_files(built, split):
  h, w = make_dummy_data.HEIGHT, make_dummy_data.WIDTH
  for name, ex in testing.examples(built, split).items():
    seed = stare.IDS.index(name.split('.')[0])
    photo, vessels, fov = dummy_images.fundus(h, w, seed=seed)
    np.testing.assert_array_equal(ex['image'], photo)  # PPM is lossless.
    np.testing.assert_array_equal(ex['mask'][..., 0], vessels)
    np.testing.assert_array_equal(ex['fov'][..., 0], fov)  # Derived.


def test_gunzipped_extracted_files_build_the_same(built, tmp_path):
  manual = tmp_path / 'manual'
  for folder, members in make_dummy_data.files().items():
    plain = {k[:-3]: gzip.decompress(v)
             for k, v in members.items()}
    dummy_images.write_tree(os.fspath(manual / folder), plain)
  b = testing.build(stare.Builder, manual, tmp_path / 'data')
  ref = testing.examples(built, 'test')
  for name, ex in testing.examples(b, 'test').items():
    for key in ('image', 'mask', 'fov'):
      np.testing.assert_array_equal(ex[key], ref[name + '.gz'][key])


def test_corrupt_gzip_names_the_member(tmp_path):
  manual = tmp_path / 'manual'
  make_dummy_data.make(os.fspath(manual), extracted=True)
  victim = manual / 'labels-ah' / 'im0163.ah.ppm.gz'
  victim.write_bytes(victim.read_bytes()[:40])
  with pytest.raises(ValueError, match=r'im0163\.ah\.ppm\.gz: cannot read'):
    testing.build(stare.Builder, manual, tmp_path / 'data')
