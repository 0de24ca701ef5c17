"""Shared builder code: label decoding, archives, FOV, morphology, errors."""

import gzip
import io
import os
import tarfile
import zipfile

import numpy as np
from PIL import Image
import pytest

from ds2f_jax.datasets import common
from ds2f_jax.datasets import dummy_images


def _blobs(h=40, w=48):
  """A binary label with thick shapes (JPEG keeps them recognisable)."""
  yy, xx = np.mgrid[:h, :w]
  return (np.hypot(yy - 14, xx - 16) < 8) | ((yy > 26) & (xx > 30))


def _encode(mask, fmt, mode=None, on=255):
  if mode in ('1', 'P01'):
    return dummy_images.encode(mask, fmt, mode)
  return dummy_images.encode(np.where(mask, on, 0).astype(np.uint8), fmt,
                             mode)


@pytest.mark.parametrize('fmt,mode,on', [
    ('GIF', 'P01', None),  # Palette indices 0/1 (index 1 white).
    ('GIF', 'L', 255),  # Grey palette, 0/255.
    ('PNG', '1', None),  # 1-bit PNG (CHASE_DB1).
    ('PNG', 'L', 1),  # 0/1 grey PNG.
    ('TIFF', 'L', 255),  # HRF manual1.
    ('TIFF', 'RGB', 255),  # HRF masks.
    ('PPM', 'RGB', 255),  # STARE labels.
    ('BMP', 'L', 255),
    ('JPEG', 'L', 255),  # Lossy: compression noise around 0 and 255.
])
def test_binary_masks_decode_from_every_encoding(fmt, mode, on):
  mask = _blobs()
  got = common.decode_binary_mask(_encode(mask, fmt, mode, on), 'x')
  assert got.dtype == np.uint8 and got.shape == mask.shape
  np.testing.assert_array_equal(got, mask)


def test_red_and_sixteen_bit_labels():
  mask = _blobs()
  red = np.zeros(mask.shape + (3,), np.uint8)
  red[mask, 0] = 255  # IDRiD: pure red, grey level 76.
  np.testing.assert_array_equal(
      common.decode_binary_mask(dummy_images.encode(red, 'TIFF'), 'x'), mask)
  buf = io.BytesIO()
  Image.fromarray(np.where(mask, 65535, 0).astype(np.uint16)).save(
      buf, format='TIFF')
  np.testing.assert_array_equal(
      common.decode_binary_mask(buf.getvalue(), 'x'), mask)


def test_binarize_rules():
  # Lossless with one non-zero value: foreground wherever non-zero.
  np.testing.assert_array_equal(
      common.binarize(np.array([[0, 3], [3, 0]])), [[0, 1], [1, 0]])
  # Lossy: faint noise stays background, half range is the cut.
  np.testing.assert_array_equal(
      common.binarize(np.array([[0, 3], [127, 128]]), lossy=True),
      [[0, 0], [0, 1]])
  # Anti-aliased lossless: half of the range its maximum implies.
  np.testing.assert_array_equal(
      common.binarize(np.array([0, 100, 200, 255])), [0, 0, 1, 1])
  np.testing.assert_array_equal(
      common.binarize(np.array([0, 30000, 40000, 65535])), [0, 0, 1, 1])


def test_decode_image_converts_to_rgb():
  grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
  img = common.decode_image(dummy_images.encode(grey, 'PNG'), 'g.png')
  assert img.shape == (3, 4, 3) and img.dtype == np.uint8
  np.testing.assert_array_equal(img[..., 1], grey)
  rgba = np.zeros((3, 4, 4), np.uint8)
  rgba[..., 0] = 200
  img = common.decode_image(dummy_images.encode(rgba, 'PNG'), 'a.png')
  np.testing.assert_array_equal(img[..., 0], 200)


@pytest.mark.parametrize('fmt', ['JPEG', 'PNG', 'TIFF', 'GIF'])
def test_truncated_image_names_the_file(fmt):
  photo, _, _ = dummy_images.fundus(40, 48, seed=1)
  data = dummy_images.encode(photo, fmt, 'P' if fmt == 'GIF' else None)
  with pytest.raises(ValueError, match=r'^some/im\.x: cannot decode image'):
    common.decode_image(data[:len(data) // 3], 'some/im.x')


def test_garbage_image_names_the_file():
  with pytest.raises(ValueError, match=r'^bad\.tif: cannot decode image'):
    common.decode_image(b'not an image at all', 'bad.tif')


def _write_layout(root):
  """One file of each kind: plain, gzipped, in a zip, tar, tar.gz, nested."""
  os.makedirs(root / 'folder', exist_ok=True)
  (root / 'folder' / 'a.txt').write_bytes(b'plain')
  (root / 'folder' / 'b.txt.gz').write_bytes(gzip.compress(b'gunzipped'))
  (root / '.hidden').write_bytes(b'skip')
  with zipfile.ZipFile(root / 'pack.zip', 'w') as z:
    z.writestr('inner/c.txt', b'zipped')
    z.writestr('__MACOSX/inner/._c.txt', b'resource fork')
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, 'w') as zz:
      zz.writestr('deep/e.txt', b'nested')
    z.writestr('sub.zip', inner.getvalue())
  for name, mode in (('t.tar', 'w'), ('t.tar.gz', 'w:gz')):
    with tarfile.open(root / name, mode) as t:
      data = name.encode()
      info = tarfile.TarInfo(f'./d_{name}.txt')
      info.size = len(data)
      t.addfile(info, io.BytesIO(data))


def test_index_reads_folders_archives_and_nested_archives(tmp_path):
  _write_layout(tmp_path)
  entries = common.index_files(tmp_path)
  got = {e.path: e.read() for e in entries}
  assert got == {
      'folder/a.txt': b'plain',
      'folder/b.txt.gz': b'gunzipped',
      'pack.zip/inner/c.txt': b'zipped',
      'pack.zip/sub.zip/deep/e.txt': b'nested',
      't.tar/d_t.tar.txt': b't.tar',
      't.tar.gz/d_t.tar.gz.txt': b't.tar.gz',
  }
  names = {e.path: e.name for e in entries}
  assert names['pack.zip/inner/c.txt'] == f'{tmp_path}/pack.zip:inner/c.txt'
  assert names['pack.zip/sub.zip/deep/e.txt'] == (
      f'{tmp_path}/pack.zip:sub.zip:deep/e.txt')


def test_find_prefers_plain_files_and_keeps_case(tmp_path):
  (tmp_path / 'x').mkdir()
  (tmp_path / 'x' / 'Image_01L.JPG').write_bytes(b'plain')
  with zipfile.ZipFile(tmp_path / 'a.zip', 'w') as z:
    z.writestr('Image_01L.jpg', b'zipped')
    z.writestr('Image_02R.jpg', b'zipped')
    z.writestr('image_03L.jpg', b'wrong case')
  found = common.find(common.index_files(tmp_path),
                      r'(?:^|/)Image_(?P<id>\d\d[LR])\.(?i:jpg)$')
  assert sorted(found) == ['01L', '02R']
  assert found['01L'].read() == b'plain'


def test_corrupt_archive_names_it(tmp_path):
  (tmp_path / 'DRIVE.zip').write_bytes(b'PK\x03\x04 truncated download')
  with pytest.raises(ValueError, match=r'DRIVE\.zip: cannot list archive'):
    common.index_files(tmp_path)


def _dilate_reference(m, r):
  """Brute force: max over the (2r+1)^2 window, edge-replicated."""
  p = np.pad(m, r, mode='edge')
  out = np.zeros_like(m)
  for dy in range(2 * r + 1):
    for dx in range(2 * r + 1):
      out |= p[dy:dy + m.shape[0], dx:dx + m.shape[1]]
  return out


@pytest.mark.parametrize('r', [1, 2, 4])
def test_dilate_and_erode_match_brute_force(r):
  m = np.random.default_rng(r).random((23, 31)) > 0.85
  np.testing.assert_array_equal(common._dilate(m, r), _dilate_reference(m, r))
  np.testing.assert_array_equal(common._erode(m, r),
                                ~_dilate_reference(~m, r))


def test_derive_fov_recovers_the_disc_despite_lesions_and_specks():
  h, w = 300, 360
  photo, vessels, disc = dummy_images.fundus(h, w, seed=3)
  yy, xx = np.mgrid[:h, :w]
  photo[np.hypot(yy - 150, xx - 200) < 25] = (8, 4, 2)  # Dark lesion inside.
  photo[5:12, 5:60] = (255, 255, 255)  # Burnt-in text outside.
  photo[290:292, 340:342] = (90, 40, 20)  # Speck outside.
  fov = common.derive_fov(photo)
  assert fov.dtype == np.uint8 and set(np.unique(fov)) == {0, 1}
  fov = fov.astype(bool)
  assert (fov & disc).sum() / (fov | disc).sum() > 0.995
  assert fov[vessels].all()
  assert not fov[5:12, 5:60].any() and not fov[290:292, 340:342].any()


def test_derive_fov_large_image_works_at_reduced_size():
  photo, _, disc = dummy_images.fundus(1100, 1650, seed=4)
  fov = common.derive_fov(photo).astype(bool)
  # The edge comes from the full-size threshold, not the reduced mask.
  assert (fov ^ disc).sum() < 0.001 * disc.sum()


def test_derive_fov_without_a_disc_is_all_ones():
  np.testing.assert_array_equal(
      common.derive_fov(np.zeros((20, 30, 3), np.uint8)), 1)


def test_example_is_png_and_round_trips():
  photo, vessels, disc = dummy_images.fundus(20, 22, seed=0)
  ex = common.example('a.jpg', photo, vessels.astype(np.uint8),
                      disc.astype(np.uint8)[..., None])
  assert ex['file_name'] == 'a.jpg'
  for key, want in (('image', photo), ('mask', vessels), ('fov', disc)):
    assert ex[key][:8] == b'\x89PNG\r\n\x1a\n'
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(ex[key]))),
                                  want)


def test_size_mismatch_names_both():
  with pytest.raises(ValueError, match=r'^size mismatch: a\.jpg is 5x4 \(WxH\)'
                     r' but b\.png is 6x4'):
    common.check_same_size(np.zeros((4, 5, 3)), 'a.jpg', np.zeros((4, 6)),
                           'b.png')


def test_config_names_and_aliases():
  class C:

    def __init__(self, name):
      self.name = name

  configs = [C('hard_exudates'), C('optic_disc')]
  assert common.check_config_name('d', None, configs) is None
  assert common.check_config_name('d', 'optic_disc', configs) == 'optic_disc'
  assert common.check_config_name('d', 'Ex', configs,
                                  {'EX': 'hard_exudates'}) == 'hard_exudates'
  with pytest.raises(ValueError, match=r"^d: unknown config 'od'; valid: "
                     r'hard_exudates, optic_disc, ex$'):
    common.check_config_name('d', 'od', configs, {'EX': 'hard_exudates'})


def test_index_follows_symlinks_but_not_loops(tmp_path):
  data = tmp_path / 'elsewhere'
  data.mkdir()
  (data / 'Image_01L.jpg').write_bytes(b'x')
  manual = tmp_path / 'manual'
  manual.mkdir()
  (manual / 'linked').symlink_to(data, target_is_directory=True)
  (data / 'loop').symlink_to(data, target_is_directory=True)
  assert [e.path for e in common.index_files(manual)] == [
      'linked/Image_01L.jpg']
