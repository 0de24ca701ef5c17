"""IDRiD builder: configs per lesion type on a dummy "A. Segmentation.zip"."""

import os

import numpy as np
import pytest

from ds2f_jax.datasets import dummy_images
from ds2f_jax.datasets import testing
from ds2f_jax.datasets.idrid import idrid_dataset_builder as idrid
from ds2f_jax.datasets.idrid.dummy_data import make_dummy_data


@pytest.fixture(scope='module')
def manual(tmp_path_factory):
  root = tmp_path_factory.mktemp('idrid_manual')
  make_dummy_data.make(os.fspath(root))
  return root


@pytest.fixture(scope='module')
def built(manual, tmp_path_factory):
  return testing.build(idrid.Builder, manual,
                       tmp_path_factory.mktemp('idrid_data'))


def test_default_is_hard_exudates_with_official_split(built):
  assert built.builder_config.name == 'hard_exudates'
  assert built.CLASS_NAMES == idrid.Builder.CLASS_NAMES == (
      'background', 'hard_exudates')
  assert sorted(testing.examples(built, 'train')) == [
      f'IDRiD_{n:02d}.jpg' for n in range(1, 55)]
  assert sorted(testing.examples(built, 'test')) == [
      f'IDRiD_{n:02d}.jpg' for n in range(55, 82)]


def test_red_tiff_labels_decode_to_binary_masks(built):
  h, w = make_dummy_data.HEIGHT, make_dummy_data.WIDTH
  for name, ex in testing.examples(built, 'test').items():
    n = int(name[6:8])
    assert ex['image'].shape == (h, w, 3)
    np.testing.assert_array_equal(ex['mask'][..., 0],
                                  make_dummy_data.lesion(n, 'EX'))
    assert ex['fov'][..., 0][ex['mask'][..., 0] > 0].all()


def test_lesion_code_alias_and_absent_labels(manual, tmp_path):
  b = testing.build(idrid.Builder, manual, tmp_path, config='SE')
  assert b.builder_config.name == 'soft_exudates'
  assert b.CLASS_NAMES == ('background', 'soft_exudates')
  for name, ex in testing.examples(b, 'train').items():
    n = int(name[6:8])
    expected = (make_dummy_data.lesion(n, 'SE') if n % 2 == 0 else
                np.zeros((make_dummy_data.HEIGHT, make_dummy_data.WIDTH)))
    np.testing.assert_array_equal(ex['mask'][..., 0], expected)


def test_wrong_lesion_lists_valid_ones():
  with pytest.raises(ValueError) as e:
    idrid.Builder(config='drusen')
  msg = str(e.value)
  assert "unknown config 'drusen'" in msg
  for name in ('hard_exudates', 'microaneurysms', 'haemorrhages',
               'soft_exudates', 'optic_disc', 'ex', 'od'):
    assert name in msg


def test_missing_lesion_folder_is_an_error(tmp_path):
  files = {k: v for k, v in make_dummy_data.files().items()
           if '5. Optic Disc' not in k}
  dummy_images.write_tree(os.fspath(tmp_path / 'm'), files)
  with pytest.raises(FileNotFoundError, match=r'81 of 162 expected files .*'
                     r'5\. Optic Disc/IDRiD_01_OD\.tif'):
    testing.build(idrid.Builder, tmp_path / 'm', tmp_path / 'd',
                  config='optic_disc')
