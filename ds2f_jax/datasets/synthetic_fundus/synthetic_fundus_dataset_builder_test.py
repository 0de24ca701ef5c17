"""Builds synthetic_fundus in a temp data_dir and reads it back, without TF."""

import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ds2f_jax.datasets import synthetic_fundus
from ds2f_jax.datasets.synthetic_fundus import fundus_generator
from ds2f_jax.datasets.synthetic_fundus import synthetic_fundus_dataset_builder as sfb


def box_sum(x, r):
  """Sum over the (2r+1)^2 window around each pixel (zero outside)."""
  c = np.pad(x, ((r + 1, r), (r + 1, r))).cumsum(0).cumsum(1)
  k = 2 * r + 1
  return c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]


@pytest.fixture(scope='module')
def builder(tmp_path_factory):
  b = synthetic_fundus.Builder(data_dir=str(tmp_path_factory.mktemp('tfds')))
  b.download_and_prepare(file_format='array_record')
  return b


def test_registered_name_and_classes():
  assert synthetic_fundus.Builder.name == 'synthetic_fundus'
  assert synthetic_fundus.Builder.CLASS_NAMES == ('background', 'vessel')
  assert 'synthetic_fundus' in tfds.list_builders(with_community_datasets=False)


def test_builds_without_tensorflow(builder):
  assert builder.is_prepared()
  assert 'tensorflow' not in sys.modules
  assert builder.info.file_format.value == 'array_record'


def test_split_counts(builder):
  counts = {k: v.num_examples for k, v in builder.info.splits.items()}
  assert counts == {'train': 96, 'validation': 16, 'test': 16}
  for split, n in counts.items():
    assert len(builder.as_data_source(split)) == n


def test_features_shapes_dtypes_values(builder):
  source = builder.as_data_source('validation')
  names = set()
  for i in range(len(source)):
    ex = source[i]
    assert ex['image'].shape == (256, 256, 3) and ex['image'].dtype == np.uint8
    assert ex['mask'].shape == (256, 256, 1) and ex['mask'].dtype == np.uint8
    assert ex['fov'].shape == (256, 256, 1) and ex['fov'].dtype == np.uint8
    mask, fov = ex['mask'][..., 0], ex['fov'][..., 0]
    assert set(np.unique(mask)) == {0, 1}
    assert set(np.unique(fov)) == {0, 1}
    assert not np.any(mask & (1 - fov)), 'vessels outside the field of view'
    # A centred disc of radius 0.44-0.48 of the side: 61-72 % of the image.
    assert 0.6 < fov.mean() < 0.73
    fraction = mask.sum() / fov.sum()
    assert 0.08 <= fraction <= 0.12, fraction
    # Vessels are darker than the retina right around them (9x9 window);
    # outside the field of view is near black.
    green = ex['image'][..., 1].astype(float)
    retina = ((fov == 1) & (mask == 0)).astype(float)
    local = box_sum(green * retina, 4) / np.maximum(box_sum(retina, 4), 1)
    contrast = (green - local)[mask == 1]
    assert contrast.mean() < -8 and (contrast < 0).mean() > 0.95
    assert ex['image'][fov == 0].mean() < 3
    names.add(ex['file_name'])
  assert len(names) == 16


def test_vessel_fraction_of_every_example(builder):
  fractions = []
  for split in ('train', 'validation', 'test'):
    source = builder.as_data_source(split)
    for i in range(len(source)):
      ex = source[i]
      fractions.append(ex['mask'].sum() / ex['fov'].sum())
  assert len(fractions) == 128
  assert 0.08 <= min(fractions) and max(fractions) <= 0.12
  assert 0.09 < np.mean(fractions) < 0.11


def test_stored_example_equals_generator(builder):
  source = builder.as_data_source('test')
  ex = source[3]
  name = ex['file_name']
  name = name.decode() if isinstance(name, bytes) else name
  split, index = name.removesuffix('.png').split('_')
  assert split == 'test'
  want = fundus_generator.generate(
      256, 256, fundus_generator.example_seed(split, int(index))
  )
  np.testing.assert_array_equal(ex['image'], want.image)
  np.testing.assert_array_equal(ex['mask'][..., 0], want.mask)
  np.testing.assert_array_equal(ex['fov'][..., 0], want.fov)


def test_deterministic_bytes_per_split_and_index():
  def png_bytes(split, index):
    ex = fundus_generator.generate(
        96, 112, fundus_generator.example_seed(split, index)
    )
    return sfb._png(ex.image), sfb._png(ex.mask), sfb._png(ex.fov)

  assert png_bytes('train', 5) == png_bytes('train', 5)
  assert png_bytes('train', 5)[0] != png_bytes('train', 6)[0]
  assert png_bytes('train', 5)[0] != png_bytes('validation', 5)[0]


def test_vessel_widths_span_one_to_five_pixels():
  seed = fundus_generator.example_seed('train', 0)
  ex = fundus_generator.generate(256, 256, seed)
  mask = ex.mask.astype(bool)
  # Horizontal run lengths of vessel pixels approximate local widths.
  runs = []
  for row in mask[::4]:
    edges = np.flatnonzero(np.diff(np.r_[0, row.astype(int), 0]))
    runs += list(edges[1::2] - edges[::2])
  runs = np.array(runs)
  assert runs.min() == 1
  assert 4 <= np.percentile(runs, 95) <= 12


def test_tiny_config_sizes(tmp_path):
  b = synthetic_fundus.Builder(data_dir=str(tmp_path), config='tiny')
  b.download_and_prepare(file_format='array_record')
  ex = b.as_data_source('train')[0]
  assert ex['image'].shape == (80, 96, 3)
  assert {k: v.num_examples for k, v in b.info.splits.items()} == {
      'train': 8, 'validation': 3, 'test': 5,
  }


def test_unknown_split_is_rejected():
  with pytest.raises(ValueError, match='unknown split'):
    fundus_generator.example_seed('holdout', 0)
