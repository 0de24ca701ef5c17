"""Augmentation and resampling: exact rules, float64 references, and cv2.

Each test runs twice (the `backend` fixture): on the OpenCV backend and on the
NumPy one, so both are held to the same rules and references.
"""

import colorsys

import numpy as np
import pytest

from ds2f_jax import augment as A

try:
  import cv2  # Test-only comparison (requirements: opencv-python-headless).
except ImportError:
  cv2 = None

needs_cv2 = pytest.mark.skipif(cv2 is None, reason='opencv not installed')


@pytest.fixture(autouse=True, params=A.BACKENDS)
def backend(request):
  """Every test runs on both backends: OpenCV and the NumPy arithmetic."""
  if request.param == 'opencv' and cv2 is None:
    pytest.skip('opencv not installed')
  previous = A.set_backend(request.param)
  yield request.param
  A.set_backend(previous)
# OpenCV 5 rewrote warpAffine in float (no 1/32-px grid): off by one level on
# ~10 % of pixels. 4.x, which albumentations 1.x used, must match exactly.
CV2_EXACT_WARP = cv2 is not None and int(cv2.__version__.split('.')[0]) < 5


def smooth_image(rng, h, w, sigma=3.0):
  """Random image with gentle gradients (interpolation errors stay small)."""
  x = rng.uniform(0, 255, (h, w, 3))
  k = np.exp(-0.5 * (np.arange(-8, 9) / sigma) ** 2)
  k /= k.sum()
  for axis in (0, 1):
    x = np.apply_along_axis(lambda v: np.convolve(v, k, mode='same'), axis, x)
  x = (x - x.min()) / (x.max() - x.min()) * 235 + 10
  return np.rint(x).astype(np.uint8)


# ----------------------------------------------------------------------------
# Recipe and parameters.


def test_sample_params_ranges_and_probabilities():
  rng = np.random.default_rng(0)
  draws = [A.sample_params(rng) for _ in range(2000)]
  jit = [d.jitter for d in draws if d.jitter is not None]
  ssr = np.array([d.shift_rotate for d in draws if d.shift_rotate is not None])
  for rate in (len(jit) / 2000, np.mean([d.hflip for d in draws]),
               np.mean([d.vflip for d in draws]), len(ssr) / 2000):
    assert 0.45 < rate < 0.55
  for name in ('brightness', 'contrast', 'saturation'):
    v = np.array([getattr(j, name) for j in jit])
    assert 0.6 <= v.min() < 0.62 and 1.38 < v.max() <= 1.4
  hue = np.array([j.hue for j in jit])
  assert -0.1 <= hue.min() < -0.098 and 0.098 < hue.max() <= 0.1
  assert all(sorted(j.order) == [0, 1, 2, 3] for j in jit)
  assert len({j.order for j in jit}) == 24  # Every order occurs.
  assert np.all(np.abs(ssr[:, 0]) <= 60) and np.abs(ssr[:, 0]).max() > 58
  assert np.all(np.abs(ssr[:, 1:]) <= 0.1) and np.abs(ssr[:, 1:]).max() > 0.098


def test_augment_is_deterministic_per_generator():
  rng = np.random.default_rng(1)
  img = smooth_image(rng, 40, 56)
  mask = rng.integers(0, 2, (40, 56), dtype=np.uint8)
  a = A.augment(img, [mask], np.random.default_rng(7))
  b = A.augment(img, [mask], np.random.default_rng(7))
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1][0], b[1][0])


def test_flips_are_exact():
  rng = np.random.default_rng(2)
  img = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
  mask = rng.integers(0, 3, (5, 7), dtype=np.uint8)
  out, (m,) = A.apply_params(img, [mask], A.AugmentParams(hflip=True))
  np.testing.assert_array_equal(out, img[:, ::-1])
  np.testing.assert_array_equal(m, mask[:, ::-1])
  out, (m,) = A.apply_params(img, [mask], A.AugmentParams(vflip=True))
  np.testing.assert_array_equal(out, img[::-1])
  np.testing.assert_array_equal(m, mask[::-1])
  out, (m,) = A.apply_params(
      img, [mask], A.AugmentParams(hflip=True, vflip=True)
  )
  np.testing.assert_array_equal(out, img[::-1, ::-1])
  assert out.flags['C_CONTIGUOUS'] and m.flags['C_CONTIGUOUS']


def test_rotation_by_zero_is_identity():
  rng = np.random.default_rng(3)
  img = rng.integers(0, 256, (33, 47, 3), dtype=np.uint8)
  maps = [rng.integers(0, 2, (33, 47), dtype=np.uint8),
          rng.integers(0, 5, (33, 47), dtype=np.uint8)]
  out, out_maps = A.shift_rotate(img, maps, 0.0, 0.0, 0.0)
  np.testing.assert_array_equal(out, img)
  for a, b in zip(out_maps, maps):
    np.testing.assert_array_equal(a, b)


def test_maps_keep_their_value_set():
  rng = np.random.default_rng(4)
  img = smooth_image(rng, 48, 64)
  mask = rng.choice(np.array([0, 1, 4], np.uint8), (48, 64))
  fov = (rng.random((48, 64)) < 0.7).astype(np.uint8)
  for seed in range(12):
    _, (m, f) = A.augment(img, [mask, fov], np.random.default_rng(seed))
    assert set(np.unique(m)) <= {0, 1, 4}
    assert set(np.unique(f)) <= {0, 1}
    assert m.dtype == np.uint8 and m.shape == (48, 64)


def test_label_map_shape_mismatch_is_rejected():
  img = np.zeros((8, 8, 3), np.uint8)
  with pytest.raises(ValueError, match='does not match'):
    A.apply_params(img, [np.zeros((8, 9), np.uint8)], A.AugmentParams())


# ----------------------------------------------------------------------------
# Geometry.


def test_reflect101_indices():
  idx = np.arange(-7, 12)
  got = A.reflect101(idx, 5)
  # gfedcb|abcdefgh|gfedcba on 5 pixels, repeated with period 8.
  want = [1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3]
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(A.reflect101(np.array([-3, 0, 4]), 1), 0)


@pytest.mark.parametrize('interpolation', ['nearest', 'bilinear'])
def test_integer_shift_reflects_101_at_the_border(interpolation):
  rng = np.random.default_rng(5)
  x = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
  # A forward shift by (+2, -1) px: out(y, x) = src(y + 1, x - 2).
  matrix = A.rotation_matrix(4, 6, 0.0, 2 / 6, -1 / 4)
  out = A.warp_affine(x, matrix, interpolation)
  # np.pad's 'reflect' is OpenCV's reflect-101 (edge pixel not repeated).
  padded = np.pad(x, ((3, 3), (3, 3), (0, 0)), mode='reflect')
  np.testing.assert_array_equal(out, padded[3 + 1 : 3 + 5, 3 - 2 : 3 + 4])


def test_rotation_matrix_matches_cv2_convention():
  # Rotating 90° about (W/2, H/2) sends the pixel at (x, y) = (W/2 + 1, H/2)
  # to (W/2, H/2 - 1): counter-clockwise on screen.
  m = A.rotation_matrix(10, 20, 90.0, 0.1, -0.2)
  x, y = m @ np.array([11.0, 5.0, 1.0])
  np.testing.assert_allclose([x, y], [10 + 2, 4 - 2], atol=1e-12)


def reference_bilinear(img, matrix):
  """Float64 inverse-mapped bilinear sampling with reflect-101."""
  h, w = img.shape[:2]
  full = np.vstack([matrix, [0, 0, 1]])
  inv = np.linalg.inv(full)
  ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
  sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
  sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
  x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
  fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
  src = img.astype(np.float64)

  def px(yy, xx):
    return src[A.reflect101(yy, h), A.reflect101(xx, w)]

  return ((1 - fy) * ((1 - fx) * px(y0, x0) + fx * px(y0, x0 + 1))
          + fy * ((1 - fx) * px(y0 + 1, x0) + fx * px(y0 + 1, x0 + 1)))


@pytest.mark.parametrize(
    'angle,dx,dy', [(37.0, 0.05, -0.08), (-60.0, -0.1, 0.1)]
)
def test_bilinear_warp_against_float64_reference(angle, dx, dy):
  rng = np.random.default_rng(6)
  img = smooth_image(rng, 41, 53)
  matrix = A.rotation_matrix(41, 53, angle, dx, dy)
  got = A.warp_affine(img, matrix, 'bilinear').astype(float)
  want = reference_bilinear(img, matrix)
  # The only difference is OpenCV's 1/32-px grid for source positions.
  assert np.abs(got - want).max() <= 2.0
  assert np.abs(got - want).mean() < 0.3


def test_nearest_warp_against_reference():
  rng = np.random.default_rng(7)
  labels = rng.integers(0, 7, (23, 31), dtype=np.uint8)
  matrix = A.rotation_matrix(23, 31, -23.0, 0.07, 0.03)
  inv = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))
  ys, xs = np.mgrid[0:23, 0:31].astype(np.float64)
  sx = np.floor(inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2] + 0.5).astype(int)
  sy = np.floor(inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2] + 0.5).astype(int)
  want = labels[A.reflect101(sy, 23), A.reflect101(sx, 31)]
  got = A.warp_affine(labels, matrix, 'nearest')
  # Positions exactly between two pixels may round either way in 1/1024 px.
  assert (got != want).mean() < 0.01


@needs_cv2
@pytest.mark.parametrize('angle,dx,dy', [
    (30.0, 0.05, -0.07), (-59.0, -0.1, 0.1), (12.3, 0.01, 0.02), (90.0, 0, 0)
])
def test_shift_rotate_matches_cv2(angle, dx, dy):
  rng = np.random.default_rng(8)
  img = smooth_image(rng, 57, 71, sigma=1.5)
  mask = rng.integers(0, 3, (57, 71), dtype=np.uint8)
  out, (m,) = A.shift_rotate(img, [mask], angle, dx, dy)
  # albumentations 1.x ShiftScaleRotate, spelled out with cv2.
  matrix = cv2.getRotationMatrix2D((71 / 2, 57 / 2), angle, 1.0)
  matrix[0, 2] += dx * 71
  matrix[1, 2] += dy * 57
  ref = cv2.warpAffine(img, matrix, (71, 57), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REFLECT_101)
  ref_m = cv2.warpAffine(mask, matrix, (71, 57), flags=cv2.INTER_NEAREST,
                         borderMode=cv2.BORDER_REFLECT_101)
  diff = np.abs(out.astype(int) - ref)
  if CV2_EXACT_WARP:
    assert diff.max() == 0
    assert np.array_equal(m, ref_m)
  else:
    assert diff.max() <= 1 and (m != ref_m).mean() < 0.005


# ----------------------------------------------------------------------------
# Colour.


def test_brightness_and_contrast_formulas():
  x = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, -1)
  x[..., 1] = x[..., 1][::-1]
  for f in (0.6, 0.87, 1.4):
    want = np.floor(np.clip(x.astype(np.float64) * f, 0, 255))
    np.testing.assert_array_equal(A.adjust_brightness(x, f), want)
    gray = np.floor(x.astype(np.float64) @ [0.299, 0.587, 0.114] + 0.5)
    want = np.floor(np.clip(x * f + gray.mean() * (1 - f), 0, 255))
    np.testing.assert_array_equal(A.adjust_contrast(x, f), want)


def test_gray_matches_bt601_luma():
  rng = np.random.default_rng(9)
  x = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
  want = x.astype(np.float64) @ [0.299, 0.587, 0.114]
  # Rounded, with 15-bit coefficients: within half a level plus a hair.
  assert np.abs(A.rgb_to_gray(x) - want).max() <= 0.51


def test_saturation_blends_with_grey():
  rng = np.random.default_rng(10)
  x = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
  for f in (0.6, 1.0, 1.33):
    gray = A.rgb_to_gray(x).astype(np.float64)[..., None]
    want = np.clip(x * f + gray * (1 - f), 0, 255)
    assert np.abs(A.adjust_saturation(x, f) - want).max() <= 0.5 + 1e-4
  grey = np.full((4, 4, 3), 77, np.uint8)
  np.testing.assert_array_equal(A.adjust_saturation(grey, 1.4), grey)


def test_hsv_against_colorsys():
  rng = np.random.default_rng(11)
  x = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
  hsv = A.rgb_to_hsv(x).reshape(-1, 3).astype(float)
  for (r, g, b), (h, s, v) in zip(x.reshape(-1, 3) / 255.0, hsv):
    rh, rs, rv = colorsys.rgb_to_hsv(r, g, b)
    dh = abs(h - rh * 180) % 180
    # Rounded through 12-bit reciprocals: half a step plus a hair.
    assert min(dh, 180 - dh) <= 0.65 or rs == 0
    assert abs(s - rs * 255) <= 0.55 and abs(v - rv * 255) < 1e-6
  back = A.hsv_to_rgb(A.rgb_to_hsv(x)).astype(int)
  # Hue has only 180 steps, so the round trip is approximate.
  assert np.abs(back - x).max() <= 6 and np.abs(back - x).mean() < 1.5


def test_hue_shift_rotates_hue():
  x = np.zeros((2, 2, 3), np.uint8)
  x[..., 0] = 200  # Pure red: hue 0.
  out = A.adjust_hue(x, 1 / 3)  # +60 in OpenCV's 0..179 units: green.
  np.testing.assert_array_equal(out[0, 0], [0, 200, 0])
  np.testing.assert_array_equal(A.adjust_hue(x, 0.0), x)


def test_color_jitter_applies_ops_in_order():
  rng = np.random.default_rng(12)
  x = smooth_image(rng, 16, 16)
  jit = A.Jitter(brightness=1.3, contrast=0.7, saturation=1.2, hue=0.05,
                 order=(3, 0, 2, 1))
  want = A.adjust_contrast(A.adjust_saturation(A.adjust_brightness(
      A.adjust_hue(x, 0.05), 1.3), 1.2), 0.7)
  np.testing.assert_array_equal(A.color_jitter(x, jit), want)
  assert not np.array_equal(
      A.color_jitter(x, jit),
      A.color_jitter(x, A.Jitter(1.3, 0.7, 1.2, 0.05, (0, 1, 2, 3))),
  )


@needs_cv2
def test_colour_ops_match_cv2():
  rng = np.random.default_rng(13)
  x = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
  gray = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)
  np.testing.assert_array_equal(A.rgb_to_gray(x), gray)
  np.testing.assert_array_equal(
      A.rgb_to_hsv(x), cv2.cvtColor(x, cv2.COLOR_RGB2HSV))
  for f in (0.63, 0.93, 1.37):
    np.testing.assert_array_equal(
        A.adjust_brightness(x, f),
        cv2.LUT(x, np.clip(np.arange(256) * f, 0, 255).astype(np.uint8)))
    lut = np.clip(np.arange(256) * f + gray.mean() * (1 - f), 0, 255)
    np.testing.assert_array_equal(
        A.adjust_contrast(x, f), cv2.LUT(x, lut.astype(np.uint8)))
    grey3 = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    np.testing.assert_array_equal(
        A.adjust_saturation(x, f), cv2.addWeighted(x, f, grey3, 1 - f, 0))
  for f in (-0.1, 0.04):
    hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
    lut = np.mod(np.arange(256, dtype=np.int16) + 180 * f, 180).astype(np.uint8)
    hsv[..., 0] = cv2.LUT(hsv[..., 0], lut)
    ref = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    diff = np.abs(A.adjust_hue(x, f).astype(int) - ref)
    # NumPy's HSV -> RGB truncates; OpenCV 4.14 is one level higher on ~7 %
    # of values (earlier 4.x on < 1 %).
    assert diff.max() <= 1 and (diff > 0).mean() < 0.08


# ----------------------------------------------------------------------------
# Resizing.


def keys_kernel(d, a=-0.75):
  d = np.abs(d)
  return np.where(
      d <= 1, (a + 2) * d**3 - (a + 3) * d**2 + 1,
      np.where(d < 2, a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a, 0.0))


def reference_bicubic(img, out_h, out_w):
  """Float64, pixel by pixel along each axis: src = (dst + ½)·in/out − ½."""
  def axis_matrix(n_in, n_out):
    m = np.zeros((n_out, n_in))
    for o in range(n_out):
      src = (o + 0.5) * n_in / n_out - 0.5
      base = int(np.floor(src))
      for tap in range(base - 1, base + 3):
        m[o, min(max(tap, 0), n_in - 1)] += keys_kernel(src - tap)
    return m
  my, mx = axis_matrix(img.shape[0], out_h), axis_matrix(img.shape[1], out_w)
  return np.einsum('oh,hwc,pw->opc', my, img.astype(np.float64), mx)


@pytest.mark.parametrize('size', [(30, 50), (128, 96), (37, 91), (64, 200)])
def test_bicubic_against_float64_reference(size):
  rng = np.random.default_rng(14)
  img = rng.integers(0, 256, (64, 100, 3), dtype=np.uint8)
  got = A.resize_bicubic(img, size)
  want = reference_bicubic(img, *size)
  assert got.shape == size + (3,) and got.dtype == np.uint8
  # Rounded and saturated: within half a level, except where float32
  # rounding tips an exact .5 (allowed on a handful of pixels only).
  err = np.abs(got - np.clip(want, 0, 255))
  assert err.max() <= 1.0
  assert (err > 0.5 + 1e-3).mean() < 1e-3
  assert np.any(want > 255.5) or np.any(want < -0.5)  # Saturation exercised.
  np.testing.assert_allclose(
      A.resize_bicubic(img.astype(np.float32), size), want, atol=2e-3)


def test_bicubic_grey_identity_and_errors():
  rng = np.random.default_rng(15)
  img = rng.integers(0, 256, (20, 24), dtype=np.uint8)
  out = A.resize_bicubic(img, (10, 48))
  assert out.shape == (10, 48)
  np.testing.assert_array_equal(
      out, A.resize_bicubic(np.repeat(img[..., None], 3, -1), (10, 48))[..., 0])
  np.testing.assert_array_equal(A.resize_bicubic(img, (20, 24)), img)
  same = A.resize_bicubic(img.astype(np.float64), (20, 24))
  assert same.dtype == np.float32 and np.array_equal(same, img)
  with pytest.raises(ValueError, match='positive'):
    A.resize_bicubic(img, (0, 4))


@needs_cv2
@pytest.mark.parametrize('shape,size', [((256, 256), (512, 512)),
                                        ((256, 256), (128, 128)),
                                        ((97, 130), (40, 61)),
                                        ((50, 64), (150, 90))])
def test_bicubic_matches_cv2(shape, size):
  rng = np.random.default_rng(16)
  img = smooth_image(rng, *shape, sigma=1.0)
  got = A.resize_bicubic(img, size)
  ref = cv2.resize(img, size[::-1], interpolation=cv2.INTER_CUBIC)
  diff = np.abs(got.astype(int) - ref)
  assert diff.max() <= 1 and (diff > 0).mean() < 1e-4


# ----------------------------------------------------------------------------
# Backends.


@needs_cv2
def test_opencv_backend_calls_opencv(backend, monkeypatch):
  calls = []
  for name in ('warpAffine', 'resize', 'cvtColor', 'LUT', 'addWeighted'):
    fn = getattr(cv2, name)
    monkeypatch.setattr(
        cv2, name,
        lambda *a, _fn=fn, _name=name, **k: calls.append(_name) or _fn(*a, **k))
  rng = np.random.default_rng(18)
  img = smooth_image(rng, 24, 30)
  params = A.AugmentParams(A.Jitter(1.2, 0.8, 1.3, 0.05), True, False,
                           (20.0, 0.05, 0.0))
  A.apply_params(img, [img[..., 0]], params)
  A.resize_bicubic(img, (12, 15))
  if backend == 'opencv':
    assert set(calls) == {'warpAffine', 'resize', 'cvtColor', 'LUT',
                          'addWeighted'}
  else:
    assert not calls


@needs_cv2
def test_backends_agree_on_the_whole_recipe():
  rng = np.random.default_rng(19)
  img = smooth_image(rng, 96, 112, sigma=1.5)
  mask = rng.integers(0, 2, (96, 112), dtype=np.uint8)
  fov = (rng.random((96, 112)) < 0.8).astype(np.uint8)
  previous = A.backend()
  try:
    for seed in range(16):
      out = {}
      for name in A.BACKENDS:
        A.set_backend(name)
        out[name] = A.augment(img, [mask, fov], np.random.default_rng(seed))
      (a, (am, af)), (b, (bm, bf)) = out['opencv'], out['numpy']
      diff = np.abs(a.astype(int) - b)
      jitter = A.sample_params(np.random.default_rng(seed)).jitter
      if jitter is None:  # Geometry alone: bit for bit.
        assert diff.max() == 0, seed
      else:
        # HSV -> RGB is the one op that differs (one level, < 8 %); a later
        # gain (up to 1.4) may make that two, and the bilinear warp spreads
        # it to neighbours.
        assert diff.max() <= 2 and diff.mean() < 0.2, seed
      np.testing.assert_array_equal(am, bm)
      np.testing.assert_array_equal(af, bf)
  finally:
    A.set_backend(previous)


def test_set_backend_rejects_unknown_names():
  with pytest.raises(ValueError, match='opencv'):
    A.set_backend('pillow')


@pytest.mark.parametrize('dtype', [np.uint8, np.float32])
def test_lookup_is_table_indexing(dtype):
  rng = np.random.default_rng(20)
  table = rng.uniform(-1, 1, 256).astype(dtype)
  for shape in [(7, 9), (7, 9, 1), (7, 9, 3)]:
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    got = A.lookup(x, table)
    assert got.shape == shape and got.dtype == dtype
    np.testing.assert_array_equal(got, table[x])
