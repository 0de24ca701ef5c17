"""ds2f_jax.imaging: the one set of size and resampling rules of every mode."""

import jax
import numpy as np
import pytest

from ds2f_jax import augment, imaging, metrics

try:
  import cv2
except ImportError:
  cv2 = None

needs_cv2 = pytest.mark.skipif(cv2 is None, reason='opencv not installed')

# Size pairs where exactness matters: the 512 -> 3504, a float32 tie
# (5 -> 605), DRIVE/CHASE/HRF-like originals from their LR or HR sizes, and
# very wide / tall / odd images.
PAIRS = [(512, 3504), (5, 605), (292, 584), (282, 565), (480, 960), (499, 999), (32, 1751),
         (64, 301), (32, 83), (64, 997), (7, 10), (10, 7), (9, 9), (1, 5), (5, 1), (33, 32)]


def test_mask_rule_is_the_exact_floor_rule():
  for n_in, n_out in PAIRS:
    want = [dst * n_in // n_out for dst in range(n_out)]  # Python integers: exact.
    got = imaging.mask_nearest_indices(n_in, n_out)
    np.testing.assert_array_equal(got, want, err_msg=f'{n_in} -> {n_out}')
    assert got.min() >= 0 and got.max() <= n_in - 1
  # The rule picks floor(dst * in / out), not the pixel centre.
  np.testing.assert_array_equal(imaging.mask_nearest_indices(4, 3), [0, 1, 2])
  np.testing.assert_array_equal(imaging.mask_nearest_indices(3, 4), [0, 0, 1, 2])
  # The prediction rule (PyTorch's float32 one) differs on a known pair.
  moved = imaging.nearest_indices(512, 3504) != imaging.mask_nearest_indices(512, 3504)
  assert moved.sum() == 11
  for rule in (imaging.mask_nearest_indices, imaging.nearest_indices):
    with pytest.raises(ValueError, match='positive'):
      rule(0, 3)


def test_prediction_rule_is_pytorchs_and_differs_from_the_mask_rule_for_some_sizes():
  """PyTorch's legacy 'nearest' computes floor(dst * float32(in / out)).

  Predictions go back to an image's size with exactly that rule (the official
  evaluation's `F.interpolate`); it equals the exact (OpenCV, mask) rule for
  most size pairs but not all: 512 -> 3504 puts 11 of the 3504 output columns
  on the neighbouring source column, 5 -> 605 moves 4.
  """
  torch = pytest.importorskip('torch')

  def torch_indices(n_in, n_out):
    x = torch.arange(n_in, dtype=torch.float32).reshape(1, 1, 1, n_in)
    out = torch.nn.functional.interpolate(x, size=(1, n_out), mode='nearest')
    return out[0, 0, 0].numpy().astype(np.int64)

  def float32_rule(n_in, n_out):
    scale = np.float32(n_in) / np.float32(n_out)
    src = np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(src, n_in - 1)

  moved = {}
  for n_in, n_out in PAIRS:
    got = torch_indices(n_in, n_out)
    np.testing.assert_array_equal(got, float32_rule(n_in, n_out), err_msg=f'{n_in} -> {n_out}')
    np.testing.assert_array_equal(got, imaging.nearest_indices(n_in, n_out))
    moved[(n_in, n_out)] = int((got != imaging.mask_nearest_indices(n_in, n_out)).sum())
  assert moved[(512, 3504)] == 11 and moved[(5, 605)] == 4
  assert {k for k, v in moved.items() if v} == {(512, 3504), (5, 605)}
  assert moved[(292, 584)] == moved[(282, 565)] == 0  # The DRIVE-like sizes agree.


@needs_cv2
def test_mask_rule_matches_cv2():
  rng = np.random.default_rng(17)
  labels = rng.integers(0, 4, (61, 83), dtype=np.uint8)
  for size in [(122, 166), (30, 41), (45, 100)]:
    ref = cv2.resize(labels, size[::-1], interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(imaging.resize_mask(labels, size), ref)
  row = np.arange(512, dtype=np.uint16)[None].repeat(2, 0)
  np.testing.assert_array_equal(
      imaging.resize_mask(row, (2, 3504))[0],
      cv2.resize(row, (3504, 2), interpolation=cv2.INTER_NEAREST)[0])


def test_device_and_host_resize_agree():
  """Eval (metrics.nearest_resize_probs, in jit) and predict/serving (resize_nearest)."""
  rng = np.random.default_rng(3)
  probs = rng.random((5, 512, 2)).astype(np.float32)
  for size in ((605, 3504), (7, 1751)):
    host = imaging.resize_nearest(probs, size)
    device = jax.jit(metrics.nearest_resize_probs, static_argnums=1)(probs, size)
    assert host.shape == (*size, 2)
    np.testing.assert_array_equal(np.asarray(device), host)
  labels = rng.integers(0, 3, (7, 9)).astype(np.uint8)
  out = imaging.resize_nearest(labels, (14, 18))
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out, labels.repeat(2, 0).repeat(2, 1))
  with pytest.raises(ValueError, match='positive'):
    imaging.resize_nearest(labels, (0, 4))


def test_io_sizes_and_input_size_per_variant(tiny_config):
  assert imaging.io_sizes((64, 80), 2) == ((32, 40), (64, 80))
  assert imaging.io_sizes((64, 80), 2, 'ds2f_after') == ((32, 40), (64, 80))
  assert imaging.io_sizes((64, 80), 4, 'dual_stream') == ((16, 20), (64, 80))
  assert imaging.io_sizes((64, 80), 2, 'seg_only') == ((32, 40), (32, 40))
  assert imaging.io_sizes((64, 80), 2, 'seg_hr') == ((64, 80), (64, 80))
  with pytest.raises(ValueError, match='not divisible by model.upscale'):
    imaging.io_sizes((65, 80), 2, 'seg_only')
  cfg = tiny_config
  cfg.data.hr_size, cfg.model.upscale = (64, 80), 2
  for variant, want in (('ds2f', (32, 40)), ('seg_only', (32, 40)), ('seg_hr', (64, 80))):
    cfg.model.variant = variant
    assert imaging.input_size(cfg) == want, variant


def test_bicubic_normalised_is_the_training_lr():
  rng = np.random.default_rng(5)
  image = rng.integers(0, 256, (83, 997, 3), dtype=np.uint8)
  got = imaging.bicubic_normalised(image, (32, 32))
  want = augment.resize_bicubic(image, (32, 32)).astype(np.float64) / 255 * 2 - 1
  assert got.dtype == np.float32 and got.shape == (32, 32, 3)
  np.testing.assert_allclose(got, want, atol=1e-7)
  x = np.arange(256, dtype=np.uint8)
  assert imaging.normalise(x)[0] == -1 and imaging.normalise(x)[-1] == 1


def test_smallest_image_is_one_pixel():
  imaging.check_image_size((1, 1, 3))
  one = imaging.bicubic_normalised(np.full((1, 1, 3), 255, np.uint8), (16, 16))
  assert one.shape == (16, 16, 3) and (one == 1).all()
  for shape in ((0, 5, 3), (5, 0, 3), (7,)):
    with pytest.raises(ValueError, match=r'eye.png of shape .* is empty: each side must be >= 1'):
      imaging.check_image_size(shape, 'eye.png')
