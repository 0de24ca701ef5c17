"""The segmentation-only baselines at their own resolution (docs/method.md D14).

seg_only: LR input, mask nearest-resized to LR, LR output (scored after a
nearest resize to the original size); seg_hr: HR input and mask. The default
DS2F pair is unchanged. No variant's inference path holds SR or SFEM weights.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from ds2f_jax import augment, imaging, inference, input_pipeline as ip, losses, train
from ds2f_jax.models import registry

VARIANTS = ('ds2f', 'ds2f_after', 'dual_stream', 'seg_only', 'seg_hr')


def _record(rng, height=80, width=96):
  return {'image': rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
          'mask': rng.integers(0, 2, (height, width, 1), dtype=np.uint8),
          'fov': rng.integers(0, 2, (height, width, 1), dtype=np.uint8)}


def _nearest_ref(x, size):
  """floor(dst * in / out) in float64, independent of imaging.resize_nearest."""
  rows = np.floor(np.arange(size[0]) * x.shape[0] / size[0]).astype(int)
  cols = np.floor(np.arange(size[1]) * x.shape[1] / size[1]).astype(int)
  return x[rows][:, cols]


def test_io_sizes_per_variant():
  assert imaging.io_sizes((64, 80), 2) == ((32, 40), (64, 80))
  assert imaging.io_sizes((64, 80), 4, 'dual_stream') == ((16, 20), (64, 80))
  assert imaging.io_sizes((64, 80), 2, 'seg_only') == ((32, 40), (32, 40))
  assert imaging.io_sizes((64, 80), 2, 'seg_hr') == ((64, 80), (64, 80))
  with pytest.raises(ValueError, match='not divisible by model.upscale'):
    imaging.io_sizes((65, 80), 2, 'seg_only')


@pytest.mark.parametrize('augmented', [False, True])
def test_make_example_per_variant(augmented):
  record = _record(np.random.default_rng(0))
  rng = lambda: np.random.default_rng(7) if augmented else None
  pair = ip.make_example(record, (64, 80), 2, rng())
  assert {k: v.shape for k, v in pair.items()} == {
      'lr': (32, 40, 3), 'hr': (64, 80, 3), 'mask': (64, 80), 'fov': (64, 80)}
  same = ip.make_example(record, (64, 80), 2, rng(), variant='ds2f_after')
  for k in pair:  # Every DS2F variant gets the very same pair.
    np.testing.assert_array_equal(same[k], pair[k], err_msg=k)

  # The augmented original, rebuilt here, is what every variant resizes.
  image, mask, fov = record['image'], record['mask'][..., 0], record['fov'][..., 0]
  if augmented:
    image, (mask, fov) = augment.augment(image, (mask, fov), np.random.default_rng(7))

  low = ip.make_example(record, (64, 80), 2, rng(), variant='seg_only')
  assert {k: v.shape for k, v in low.items()} == {
      'lr': (32, 40, 3), 'hr': (32, 40, 3), 'mask': (32, 40), 'fov': (32, 40)}
  np.testing.assert_array_equal(low['lr'], pair['lr'])  # The same LR input as DS2F ...
  np.testing.assert_array_equal(low['hr'], low['lr'])
  # ... and the mask nearest-resized from the original to LR, as the official baseline.
  np.testing.assert_array_equal(low['mask'], _nearest_ref(mask, (32, 40)).astype(np.int32))
  np.testing.assert_array_equal(low['fov'], _nearest_ref(fov, (32, 40)))
  assert low['mask'].dtype == np.int32 and low['fov'].dtype == np.uint8

  high = ip.make_example(record, (64, 80), 2, rng(), variant='seg_hr')
  assert {k: v.shape for k, v in high.items()} == {
      'lr': (64, 80, 3), 'hr': (64, 80, 3), 'mask': (64, 80), 'fov': (64, 80)}
  for k in ('hr', 'mask', 'fov'):  # The DS2F target, now also the input.
    np.testing.assert_array_equal(high[k], pair[k], err_msg=k)
  np.testing.assert_array_equal(high['lr'], pair['hr'])


def test_seg_only_mask_comes_from_the_original_even_at_hr_size():
  # Original already at HR: DS2F keeps it; seg_only still resizes it to LR itself.
  record = _record(np.random.default_rng(1), 64, 80)
  low = ip.make_example(record, (64, 80), 4, variant='seg_only')
  np.testing.assert_array_equal(low['mask'], _nearest_ref(record['mask'][..., 0], (16, 20)))
  np.testing.assert_array_equal(
      low['lr'], imaging.normalise(augment.resize_bicubic(record['image'], (16, 20))))


def _config(cfg, variant, **kw):
  cfg = cfg.copy_and_resolve_references()
  cfg.model.variant = variant
  for k, v in kw.items():
    cfg.data[k] = v
  return cfg


def test_train_and_eval_batches_at_the_variant_size(tiny_config):
  # tiny: HR 64 x 64, r = 2, batch 2; originals are 256 x 256.
  expect = {'ds2f': ((32, 32), (64, 64)), 'seg_only': ((32, 32), (32, 32)),
            'seg_hr': ((64, 64), (64, 64))}
  batches = {}
  for variant, (ins, outs) in expect.items():
    cfg = _config(tiny_config, variant)
    batch = next(ip.train_iterator(cfg, 0))
    batches[variant] = batch
    assert batch['lr'].shape == (2, *ins, 3), variant
    assert batch['mask'].shape == batch['fov'].shape == (2, *outs), variant
    assert batch['hr'].shape == (2, *outs, 3), variant
    ev = next(ip.eval_batches(cfg, 'validation', 4))
    assert ev['lr'].shape == (4, *ins, 3) and ev['mask'].shape == (4, *outs), variant
  # Same seed, same augmented originals: the variants differ only by their resizes.
  np.testing.assert_array_equal(batches['seg_only']['lr'], batches['ds2f']['lr'])
  np.testing.assert_array_equal(batches['seg_hr']['lr'], batches['ds2f']['hr'])
  np.testing.assert_array_equal(batches['seg_hr']['mask'], batches['ds2f']['mask'])
  # From 256: LR row i is source row 8i, HR row 2i is source row 4 * 2i, the same one.
  np.testing.assert_array_equal(batches['seg_only']['mask'], batches['ds2f']['mask'][:, ::2, ::2])

  # HR crops: seg_only crops its LR example by crop / r, seg_hr by crop.
  for variant, size in (('seg_only', (16, 16)), ('seg_hr', (32, 32)), ('ds2f', None)):
    batch = next(ip.train_iterator(_config(tiny_config, variant, crop_size=(32, 32)), 0))
    lr_side = (16, 16) if variant == 'ds2f' else size
    assert batch['lr'].shape == (2, *lr_side, 3), variant
    assert batch['mask'].shape == (2, *(size or (32, 32))), variant
    if size:
      np.testing.assert_array_equal(batch['lr'], batch['hr'])


def test_train_step_outputs_and_losses_match_the_batch(tiny_config):
  """Logits at the mask's size; CE only for the baselines; validation at that size."""
  for variant in ('seg_only', 'seg_hr', 'dual_stream', 'ds2f'):
    cfg = _config(tiny_config, variant)
    batch = next(ip.train_iterator(cfg, 0))
    model = train.create_model(cfg)
    x = jnp.asarray(batch['lr'])
    v = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=True))
    outs, _ = jax.eval_shape(
        lambda v: model.apply(v, x, train=True, mutable=['batch_stats']), v)
    assert outs.out.shape == (*batch['mask'].shape, 2), variant
    _, parts = jax.eval_shape(
        lambda o: losses.total_loss(o, batch, cfg.loss, cfg.model.num_classes), outs)
    expected = {'seg_only': {'ce'}, 'seg_hr': {'ce'}, 'dual_stream': {'ce', 'mse'},
                'ds2f': {'ce', 'mse', 'ssim', 'rmi'}}[variant]
    assert set(parts) == expected, variant
    ev = next(ip.eval_batches(cfg, 'validation', 4))
    logits = jax.eval_shape(lambda v: model.apply(v, jnp.asarray(ev['lr']), train=False), v)
    assert logits.shape == (*ev['mask'].shape, 2), variant


def test_inference_input_size_per_variant(tiny_config):
  sizes = {v: inference.lr_size(_config(tiny_config, v)) for v in VARIANTS}
  assert sizes == {'ds2f': (32, 32), 'ds2f_after': (32, 32), 'dual_stream': (32, 32),
                   'seg_only': (32, 32), 'seg_hr': (64, 64)}


def _paths(tree, prefix=''):
  out = []
  for k, v in tree.items():
    out += _paths(v, f'{prefix}{k}/') if isinstance(v, dict) else [f'{prefix}{k}']
  return out


@pytest.mark.parametrize('name, hr', [('ds2f_unet', (64, 64)), ('ds2f_deeplabv3plus', (256, 256))])
def test_inference_path_has_no_sr_or_sfem_weights_for_any_variant(name, hr):
  cfg = default.get_config()
  cfg.model.name, cfg.model.width, cfg.data.hr_size = name, 4, hr
  for variant in VARIANTS:
    cfg.model.variant = variant
    model = registry.create_model(cfg.model)
    shapes = inference.variable_shapes(cfg, model)  # What `restore` reads from disk.
    assert set(shapes['params']) == {'encoder', 'seg_decoder', 'out_conv'}, variant
    for path in _paths(shapes['params']) + _paths(shapes['batch_stats']):
      assert not path.startswith(('sr_', 'sfem')), (variant, path)
    size = inference.lr_size(cfg)
    x = jax.ShapeDtypeStruct((2, *size, 3), jnp.float32)
    full = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=True), x)
    trained_only = set(full['params']) - set(shapes['params'])
    assert trained_only == {'ds2f': {'sr_decoder', 'sr_head', 'sfem'},
                            'ds2f_after': {'sr_decoder', 'sr_head', 'sfem'},
                            'dual_stream': {'sr_decoder', 'sr_head'},
                            'seg_only': set(), 'seg_hr': set()}[variant]
