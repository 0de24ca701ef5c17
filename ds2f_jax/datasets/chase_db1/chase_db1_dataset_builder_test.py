"""CHASE_DB1 builder: dummy archive, bad input, and the real archive."""

import io
import os
import pathlib
import zipfile

import numpy as np
from PIL import Image
import pytest

from ds2f_jax.datasets import dummy_images
from ds2f_jax.datasets import testing
from ds2f_jax.datasets.chase_db1 import chase_db1_dataset_builder as chase
from ds2f_jax.datasets.chase_db1.dummy_data import make_dummy_data

# <repo>/../shared/datasets/chase_db1/CHASEDB1.zip; never copied into the repo.
REAL_ZIP = (pathlib.Path(os.path.abspath(__file__)).parents[3] / '..' /
            'shared' / 'datasets' / 'chase_db1' / 'CHASEDB1.zip')


@pytest.fixture(scope='module')
def manual(tmp_path_factory):
  root = tmp_path_factory.mktemp('chase_manual')
  make_dummy_data.make(os.fspath(root))
  return root


@pytest.fixture(scope='module')
def built(manual, tmp_path_factory):
  return testing.build(chase.Builder, manual,
                       tmp_path_factory.mktemp('chase_data'))


def test_splits_follow_the_default_config(built):
  assert built.builder_config.name == 'train20_test8'
  train = testing.examples(built, 'train')
  test = testing.examples(built, 'test')
  assert sorted(train) == [f'Image_{i}.jpg' for i in chase.IDS[:20]]
  assert sorted(test) == [f'Image_{i}.jpg' for i in chase.IDS[20:]]


def test_features_match_the_source_files(built):
  h, w = make_dummy_data.HEIGHT, make_dummy_data.WIDTH
  for k, i in enumerate(chase.IDS[20:], start=20):
    ex = testing.examples(built, 'test')[f'Image_{i}.jpg']
    _, vessels, fov = dummy_images.fundus(h, w, seed=k)
    assert ex['image'].shape == (h, w, 3) and ex['image'].dtype == np.uint8
    assert ex['mask'].shape == (h, w, 1) and ex['mask'].dtype == np.uint8
    assert ex['fov'].shape == (h, w, 1) and ex['fov'].dtype == np.uint8
    # The 1-bit PNG label decodes to exactly the vessels drawn.
    np.testing.assert_array_equal(ex['mask'][..., 0], vessels)
    # The derived FOV is the toy retina's disc, pixel for pixel.
    np.testing.assert_array_equal(ex['fov'][..., 0], fov)


def test_other_config_swaps_the_split(manual, tmp_path):
  b = testing.build(chase.Builder, manual, tmp_path, config='train8_test20')
  assert b.info.splits['train'].num_examples == 8
  assert b.info.splits['test'].num_examples == 20
  assert sorted(testing.examples(b, 'train')) == [
      f'Image_{i}.jpg' for i in chase.IDS[20:]]


def test_unknown_config_lists_valid_ones():
  with pytest.raises(ValueError, match='train20_test8, train8_test20'):
    chase.Builder(config='train10_test18')


def test_extracted_files_equal_the_zip(built, tmp_path):
  manual = tmp_path / 'manual'
  make_dummy_data.make(os.fspath(manual), extracted=True)
  b = testing.build(chase.Builder, manual, tmp_path / 'data')
  a_ex, b_ex = testing.examples(built, 'test'), testing.examples(b, 'test')
  assert sorted(a_ex) == sorted(b_ex)
  for name in a_ex:
    for key in ('image', 'mask', 'fov'):
      np.testing.assert_array_equal(a_ex[name][key], b_ex[name][key])


def _extracted(tmp_path):
  manual = tmp_path / 'manual'
  make_dummy_data.make(os.fspath(manual), extracted=True)
  return manual


def test_truncated_image_names_the_file_and_leaves_nothing(tmp_path):
  manual = _extracted(tmp_path)
  # A test-split photo: the train split is complete when it fails.
  victim = manual / 'Image_13R.jpg'
  good = victim.read_bytes()
  victim.write_bytes(good[:len(good) // 2])
  data_dir = tmp_path / 'data'
  with pytest.raises(ValueError, match=r'Image_13R\.jpg: cannot decode'):
    testing.build(chase.Builder, manual, data_dir)
  # No version dir, finished or incomplete, survives the failure ...
  assert testing.prepared_dirs(data_dir) == []
  assert not chase.Builder(data_dir=os.fspath(data_dir)).is_prepared()
  # ... and the same data_dir builds once the file is fixed.
  victim.write_bytes(good)
  b = testing.build(chase.Builder, manual, data_dir)
  assert b.info.splits['train'].num_examples == 20
  assert testing.prepared_dirs(data_dir) == ['chase_db1/train20_test8/1.0.0']


def test_size_mismatch_names_image_and_label(tmp_path):
  manual = _extracted(tmp_path)
  label = manual / 'Image_12L_1stHO.png'
  label.write_bytes(dummy_images.encode(np.zeros((10, 12), bool), 'PNG', '1'))
  with pytest.raises(ValueError,
                     match=r'Image_12L\.jpg is 25x24.*Image_12L_1stHO\.png '
                     r'is 12x10'):
    testing.build(chase.Builder, manual, tmp_path / 'data')


def test_missing_files_are_listed(tmp_path):
  manual = _extracted(tmp_path)
  (manual / 'Image_07L.jpg').unlink()
  (manual / 'Image_14R_1stHO.png').unlink()
  with pytest.raises(FileNotFoundError) as e:
    testing.build(chase.Builder, manual, tmp_path / 'data')
  msg = str(e.value)
  assert '2 of 56 expected files are missing' in msg
  assert 'Image_07L.jpg, Image_14R_1stHO.png' in msg
  assert 'blogs.kingston.ac.uk' in msg


@pytest.mark.skipif(not REAL_ZIP.exists(), reason='real CHASEDB1.zip absent')
def test_real_archive(tmp_path):
  manual = tmp_path / 'manual'
  manual.mkdir()
  (manual / 'CHASEDB1.zip').symlink_to(REAL_ZIP.resolve())
  b = testing.build(chase.Builder, manual, tmp_path / 'data')
  exs = {**testing.examples(b, 'train'), **testing.examples(b, 'test')}
  assert len(exs) == 28
  with zipfile.ZipFile(REAL_ZIP) as z:
    first = np.asarray(Image.open(io.BytesIO(z.read('Image_01L_1stHO.png'))))
  vessel_fracs = []
  for name, ex in exs.items():
    assert ex['image'].shape == (960, 999, 3), name
    assert ex['mask'].shape == ex['fov'].shape == (960, 999, 1), name
    mask = ex['mask'][..., 0]
    fov = ex['fov'][..., 0].astype(bool)
    assert set(np.unique(mask)) == {0, 1}, name
    vessel_fracs.append(mask.mean())
    assert 0.6 <= fov.mean() <= 0.9, name
    assert fov[mask.astype(bool)].mean() > 0.99, name  # Vessels lie inside.
    assert not fov[:5, :5].any() and not fov[-5:, -5:].any(), name
  assert 0.06 <= np.mean(vessel_fracs) <= 0.08
  np.testing.assert_array_equal(exs['Image_01L.jpg']['mask'][..., 0], first)
