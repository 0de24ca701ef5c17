"""Input pipeline on the tiny synthetic_fundus config (80x96, 8/3/5 images)."""

import os
import sys

import ml_collections
import numpy as np
import pytest

from configs import default
from ds2f_jax import augment, imaging
from configs import synthetic
from ds2f_jax import input_pipeline
from ds2f_jax import input_pipeline as ip


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp('tfds')
  cfg = default.get_config()
  cfg.data.data_dir = str(path)
  cfg.data.config = 'tiny'
  ip.prepare(cfg.data)
  return str(path)


def make_config(data_dir, **data):
  cfg = default.get_config()
  cfg.seed = 3
  cfg.batch_size = 4
  cfg.model.upscale = 2
  cfg.data.data_dir = data_dir
  cfg.data.config = 'tiny'
  cfg.data.hr_size = (64, 80)
  cfg.data.num_workers = 2
  cfg.data.prefetch = 2
  for key, value in data.items():
    cfg.data[key] = value
  return cfg


def source(cfg, split='train'):
  return ip.get_builder(cfg.data).as_data_source(split)


def assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ----------------------------------------------------------------------------
# Builders.


def test_prepare_builds_without_tensorflow(data_dir):
  cfg = make_config(data_dir)
  builder = ip.prepare(cfg.data)
  assert builder.is_prepared() and builder.builder_config.name == 'tiny'
  assert len(builder.as_data_source('train')) == 8
  assert 'tensorflow' not in sys.modules


def test_unknown_dataset_lists_available_ones(data_dir):
  cfg = make_config(data_dir)
  cfg.data.name = 'no_such_set'
  with pytest.raises(
      ValueError, match=r"data.name 'no_such_set'.*synthetic_fundus"):
    ip.get_builder(cfg.data)
  assert 'synthetic_fundus' in ip.available_datasets()


# ----------------------------------------------------------------------------
# One example.


def test_make_example_without_resize_keeps_the_original(data_dir):
  record = source(make_config(data_dir))[0]
  ex = ip.make_example(record, (80, 96), 2)
  want = record['image'] / np.float32(255) * 2 - 1
  np.testing.assert_array_equal(ex['hr'], want)
  np.testing.assert_array_equal(ex['mask'], record['mask'][..., 0])
  np.testing.assert_array_equal(ex['fov'], record['fov'][..., 0])
  lr = augment.resize_bicubic(record['image'], (40, 48))
  np.testing.assert_array_equal(ex['lr'], lr.astype(np.float32) / 255 * 2 - 1)


def test_make_example_shapes_dtypes_ranges(data_dir):
  record = source(make_config(data_dir))[1]
  ex = ip.make_example(record, (64, 80), 2, np.random.default_rng(0))
  assert ex['lr'].shape == (32, 40, 3) and ex['lr'].dtype == np.float32
  assert ex['hr'].shape == (64, 80, 3) and ex['hr'].dtype == np.float32
  assert ex['mask'].shape == (64, 80) and ex['mask'].dtype == np.int32
  assert ex['fov'].shape == (64, 80) and ex['fov'].dtype == np.uint8
  for key in ('lr', 'hr'):
    assert -1 <= ex[key].min() and ex[key].max() <= 1
    # On the 1/255 grid: LR and HR are uint8 images before normalising.
    levels = (ex[key] + 1) / 2 * 255
    np.testing.assert_allclose(levels, np.rint(levels), atol=1e-4)
  assert set(np.unique(ex['mask'])) == {0, 1}
  assert set(np.unique(ex['fov'])) == {0, 1}


def test_lr_and_hr_come_from_the_original(data_dir):
  record = source(make_config(data_dir))[2]
  ex = ip.make_example(record, (40, 48), 2)  # HR below the original size.
  img = record['image']
  hr = augment.resize_bicubic(img, (40, 48))
  lr = augment.resize_bicubic(img, (20, 24))  # Not a resize of HR.
  np.testing.assert_array_equal(ex['hr'], imaging.normalise(hr))
  np.testing.assert_array_equal(ex['lr'], imaging.normalise(lr))
  assert not np.array_equal(lr, augment.resize_bicubic(hr, (20, 24)))
  np.testing.assert_array_equal(
      ex['mask'], imaging.resize_mask(record['mask'][..., 0], (40, 48)))


def test_hr_size_must_be_divisible_by_upscale(data_dir):
  record = source(make_config(data_dir))[0]
  with pytest.raises(
      ValueError, match=r'data.hr_size \(63, 80\).*model.upscale 2'):
    ip.make_example(record, (63, 80), 2)
  cfg = make_config(data_dir, hr_size=(64, 81))
  with pytest.raises(ValueError, match='data.hr_size'):
    ip.train_dataset(cfg)


def test_normalise_formula():
  x = np.arange(256, dtype=np.uint8)
  np.testing.assert_allclose(imaging.normalise(x), x / 255.0 * 2 - 1, atol=1e-7)
  assert imaging.normalise(x)[0] == -1 and imaging.normalise(x)[-1] == 1


# ----------------------------------------------------------------------------
# Training.


def identify(batch_hr, originals):
  """Index of each unaugmented HR image among the split's originals."""
  return [
      next(i for i, o in enumerate(originals) if np.array_equal(hr, o))
      for hr in batch_hr
  ]


def test_train_batches_shapes_and_epochs(data_dir):
  cfg = make_config(data_dir, augment=False, hr_size=(80, 96))
  ds = ip.train_dataset(cfg)
  src = source(cfg)
  originals = [imaging.normalise(src[i]['image']) for i in range(len(src))]
  batch = ds[0]
  assert batch['lr'].shape == (4, 40, 48, 3) and batch['lr'].dtype == np.float32
  assert batch['hr'].shape == (4, 80, 96, 3)
  assert batch['mask'].shape == (4, 80, 96) and batch['mask'].dtype == np.int32
  assert batch['fov'].shape == (4, 80, 96) and batch['fov'].dtype == np.uint8
  # 8 images, batch 4: steps 0-1 are epoch 0, steps 2-3 epoch 1, reshuffled.
  epoch0 = identify(ds[0]['hr'], originals) + identify(ds[1]['hr'], originals)
  epoch1 = identify(ds[2]['hr'], originals) + identify(ds[3]['hr'], originals)
  assert sorted(epoch0) == sorted(epoch1) == list(range(8))
  assert epoch0 != epoch1 and epoch0 != list(range(8))


def test_same_batch_across_constructions_and_from_iterator(data_dir):
  cfg = make_config(data_dir)
  a, b = ip.train_dataset(cfg), ip.train_dataset(cfg)
  for step in (0, 3, 11):
    assert_batches_equal(a[step], b[step])
  it = ip.train_iterator(cfg, 5)
  for step in (5, 6, 7):
    assert_batches_equal(next(it), a[step])
  cfg.seed = 4
  assert not np.array_equal(ip.train_dataset(cfg)[0]['hr'], a[0]['hr'])


def test_augmentation_is_applied_and_seeded_per_element(data_dir):
  plain = ip.train_dataset(make_config(data_dir, augment=False))
  augmented = ip.train_dataset(make_config(data_dir, augment=True))
  # The same examples in the same order; augmentation changes most of them.
  changed = [
      not np.array_equal(plain[s]['hr'][i], augmented[s]['hr'][i])
      for s in range(4) for i in range(4)
  ]
  assert sum(changed) >= 12  # Each op has p 0.5: ~15 of 16 change.
  # An element's augmentation depends on its global index only.
  one = make_config(data_dir, augment=True)
  one.batch_size = 1
  single = ip.train_dataset(one)
  for g in (0, 5, 13):
    np.testing.assert_array_equal(
        single[g]['hr'][0], augmented[g // 4]['hr'][g % 4])


def test_processes_read_disjoint_covering_parts(data_dir):
  cfg = make_config(data_dir)
  full = ip.train_dataset(cfg)
  parts = [
      ip.train_dataset(cfg, process_index=p, process_count=2) for p in (0, 1)
  ]
  for step in (0, 1, 6):
    assert parts[0][step]['hr'].shape[0] == 2
    joined = {k: np.concatenate([parts[0][step][k], parts[1][step][k]])
              for k in full[step]}
    assert_batches_equal(joined, full[step])
  with pytest.raises(
      ValueError, match='batch_size 4 must be a positive multiple'):
    ip.train_dataset(cfg, process_index=0, process_count=3)
  with pytest.raises(ValueError, match='process_index 2'):
    ip.train_dataset(cfg, process_index=2, process_count=2)


def test_random_crop_is_aligned(data_dir):
  cfg = make_config(
      data_dir, augment=False, hr_size=(80, 96), crop_size=(32, 48))
  crop = ip.train_dataset(cfg)[0]
  cfg = make_config(data_dir, augment=False, hr_size=(80, 96))
  whole = ip.train_dataset(cfg)[0]
  assert crop['hr'].shape == (4, 32, 48, 3)
  assert crop['lr'].shape == (4, 16, 24, 3)
  for i in range(4):
    hits = [(y, x) for y in range(0, 49, 2) for x in range(0, 49, 2)
            if np.array_equal(whole['hr'][i, y:y + 32, x:x + 48],
                              crop['hr'][i])]
    assert hits, 'HR crop not found at an offset that is a multiple of r'
    y, x = hits[0]
    np.testing.assert_array_equal(
        crop['lr'][i], whole['lr'][i, y // 2:y // 2 + 16, x // 2:x // 2 + 24])
    np.testing.assert_array_equal(
        crop['mask'][i], whole['mask'][i, y:y + 32, x:x + 48])
  with pytest.raises(ValueError, match='data.crop_size'):
    ip.train_dataset(make_config(data_dir, crop_size=(33, 48)))
  with pytest.raises(ValueError, match='larger than data.hr_size'):
    ip.train_dataset(make_config(data_dir, crop_size=(96, 48)))


# ----------------------------------------------------------------------------
# Evaluation.


def test_eval_batches_cover_split_once_with_padding(data_dir):
  cfg = make_config(data_dir)
  src = source(cfg, 'test')  # 5 examples.
  batches = list(ip.eval_batches(cfg, 'test', 2))
  assert len(batches) == 3
  for b in batches:
    assert b['hr'].shape == (2, 64, 80, 3) and b['lr'].shape == (2, 32, 40, 3)
    assert b['valid'].dtype == np.float32 and b['index'].dtype == np.int32
  valid = np.concatenate([b['valid'] for b in batches])
  index = np.concatenate([b['index'] for b in batches])
  np.testing.assert_array_equal(valid, [1, 1, 1, 1, 1, 0])
  np.testing.assert_array_equal(index, [0, 1, 2, 3, 4, -1])
  for key in ('lr', 'hr', 'mask', 'fov'):
    assert not batches[-1][key][1].any()  # Padding is all zeros.
  for i in range(5):
    want = ip.make_example(src[i], (64, 80), 2)  # No augmentation.
    for key, value in want.items():
      np.testing.assert_array_equal(batches[i // 2][key][i % 2], value)


def test_eval_batches_split_over_processes(data_dir):
  cfg = make_config(data_dir)
  full = list(ip.eval_batches(cfg, 'validation', 4))  # 3 examples, 1 padding.
  parts = [list(ip.eval_batches(cfg, 'validation', 4, process_index=p,
                                process_count=2)) for p in (0, 1)]
  assert len(full) == len(parts[0]) == len(parts[1]) == 1
  np.testing.assert_array_equal(parts[0][0]['valid'], [1, 1])
  np.testing.assert_array_equal(parts[1][0]['valid'], [1, 0])
  joined = {
      k: np.concatenate([parts[0][0][k], parts[1][0][k]]) for k in full[0]
  }
  assert_batches_equal(joined, full[0])


class _Split:

  def __init__(self, n):
    self.num_examples = n


class _FakeBuilder:
  """A dataset with train and test only, like most real ones."""

  class info:  # pylint: disable=invalid-name
    full_name = 'fake/1.0.0'
    splits = {'train': _Split(10), 'test': _Split(4)}

  def as_data_source(self, split):
    return [f'{split}{i}' for i in range(10 if split == 'train' else 4)]


def test_validation_is_carved_from_train_when_missing(monkeypatch):
  monkeypatch.setattr(input_pipeline, 'prepare', lambda data_cfg: _FakeBuilder())
  cfg = synthetic.get_config('tiny')
  val = list(input_pipeline.split_source(cfg, 'validation'))
  train = list(input_pipeline.split_source(cfg, 'train'))
  test = list(input_pipeline.split_source(cfg, 'test'))
  assert len(val) == 2 and len(train) == 8  # data.val_fraction = 0.2 of 10.
  assert sorted(val + train) == sorted(f'train{i}' for i in range(10))
  assert test == [f'test{i}' for i in range(4)]  # The test split is untouched.
  cfg.seed = 7  # The hold-out does not move with the training seed.
  assert list(input_pipeline.split_source(cfg, 'validation')) == val
  with pytest.raises(ValueError, match="eval.split='dev' is not a split of fake/1.0.0"):
    input_pipeline.split_source(cfg, 'dev', 'eval.split')


def test_num_workers_zero_means_one_per_core(monkeypatch):
  cfg = ml_collections.ConfigDict({'data': {'num_workers': 0, 'prefetch': 3}})
  monkeypatch.setattr(os, 'cpu_count', lambda: 12)
  assert ip.num_workers(cfg) == 12
  assert ip.read_options(cfg).num_threads == 12 and ip.read_options(cfg).prefetch_buffer_size == 3
  cfg.data.num_workers = 3
  assert ip.num_workers(cfg) == 3
  cfg.data.num_workers = -1
  with pytest.raises(ValueError, match='data.num_workers'):
    ip.num_workers(cfg)


class _CountingSource:
  """A source whose reads are counted (a decode per read without the cache)."""

  def __init__(self, inner):
    self.inner, self.reads = inner, 0

  def __len__(self):
    return len(self.inner)

  def __getitem__(self, i):
    self.reads += 1
    return self.inner[i]


def test_decoded_cache_reads_each_record_once_within_its_budget(data_dir):
  src = _CountingSource(source(make_config(data_dir)))
  one = sum(np.asarray(v).nbytes for v in src.inner[0].values())
  cache = ip.DecodedCache(src, max_bytes=int(2.5 * one))  # Room for two records.
  for _ in range(3):
    for i in (0, 1, 2):
      record = cache[i]
      np.testing.assert_array_equal(record['image'], src.inner[i]['image'])
  # Records 0 and 1 are read once; 2 does not fit and is read every time.
  assert src.reads == 2 + 3 and cache.cached_bytes == 2 * one
  assert len(cache) == len(src.inner) == 8
  with pytest.raises(ValueError, match='read-only'):
    cache[0]['image'][0, 0, 0] = 1  # An in-place edit cannot leak into later epochs.


def test_train_batches_do_not_depend_on_the_cache(data_dir, monkeypatch):
  cached = ip.train_dataset(make_config(data_dir))
  plain = ip.train_dataset(make_config(data_dir, cache_mb=0))
  for step in (0, 1, 2, 3, 5):  # Steps 2+ come from cached records (8 images, batch 4).
    assert_batches_equal(cached[step], plain[step])
  made = []
  monkeypatch.setattr(ip, 'DecodedCache', lambda src, n: made.append(n) or src)
  ip.train_dataset(make_config(data_dir, cache_mb=3))
  ip.train_dataset(make_config(data_dir, cache_mb=0))
  assert made == [3 * 2**20]


@pytest.mark.parametrize('value', [-1, 'big', None, True])
def test_cache_mb_must_be_a_non_negative_number(value):
  cfg = ml_collections.ConfigDict({'cache_mb': 0})
  with cfg.ignore_type():
    cfg.cache_mb = value
  with pytest.raises(ValueError, match=f'data.cache_mb must be a number >= 0.*got {value!r}'):
    ip.cache_bytes(cfg)
