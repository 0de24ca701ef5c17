"""Archives in a manual dir: bounded reads (no decompression bomb fills memory) and no silent
choice between two candidates for one file (docs/reliability.md, "Reliability II")."""

import io
import os
import re
import shutil
import struct
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from ds2f_jax.datasets import common, testing
from ds2f_jax.datasets.drive import drive_dataset_builder as drive
from ds2f_jax.datasets.drive.dummy_data import make_dummy_data as drive_dummy

# The stated limit (256 MiB); read from the module where it exists.
BOMB_BYTES = getattr(common, 'MAX_FILE_BYTES', 256 * 2**20) + 2**20
TooLarge = getattr(common, 'FileTooLargeError', ValueError)


def _zip_of_zeros(path, member, size):
  """A zip whose member inflates to `size` zero bytes (a few hundred KB on disk)."""
  with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
    with z.open(member, 'w', force_zip64=True) as f:
      chunk = bytes(2**20)
      for _ in range(size // len(chunk)):
        f.write(chunk)


def _png_chunk(kind, data):
  return (struct.pack('>I', len(data)) + kind + data +
          struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))


def _big_png(width, height):
  """A valid 8-bit grey PNG of zeros, built row by row (never held decoded)."""
  comp = zlib.compressobj(9)
  row = bytes(1 + width)  # Filter byte 0, then the pixels.
  idat = b''.join(comp.compress(row) for _ in range(height)) + comp.flush()
  return (b'\x89PNG\r\n\x1a\n' + _png_chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 0,
                                                                 0, 0, 0)) +
          _png_chunk(b'IDAT', idat) + _png_chunk(b'IEND', b''))


def test_zip_member_that_inflates_past_the_limit_is_refused_unread(tmp_path):
  archive = tmp_path / 'DRIVE.zip'
  _zip_of_zeros(archive, 'DRIVE/training/images/21_training.tif', BOMB_BYTES)
  assert archive.stat().st_size < 2 * 2**20
  [entry] = common.index_files(tmp_path)
  tracemalloc.start()
  try:
    with pytest.raises(TooLarge) as e:
      common.read_image(entry)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert re.fullmatch(
      rf'{re.escape(str(archive))}:DRIVE/training/images/21_training\.tif: refused unread, it '
      rf'would inflate to {BOMB_BYTES} bytes, more than an image file may hold here \(256 MiB, '
      r'64 megapixels; ds2f_jax/datasets/common\.py MAX_FILE_BYTES, MAX_IMAGE_PIXELS\)', str(e.value))
  assert peak < 16 * 2**20, peak  # Nothing of the member was inflated.


def test_gz_member_is_inflated_only_up_to_the_limit(tmp_path, monkeypatch):
  monkeypatch.setattr(common, 'MAX_FILE_BYTES', 2**20, raising=False)
  comp = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
  gz = b''.join(comp.compress(bytes(2**20)) for _ in range(64)) + comp.flush()
  (tmp_path / 'im0001.ppm.gz').write_bytes(gz)  # 64 MiB inside.
  [entry] = common.index_files(tmp_path)
  with pytest.raises(TooLarge, match=r'im0001\.ppm\.gz: refused unread, it would '
                     r'inflate to more than 1048576 bytes'):
    entry.read()
  small = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
  (tmp_path / 'im0001.ppm.gz').write_bytes(small.compress(b'P5 1 1 255 x') + small.flush())
  assert common.index_files(tmp_path)[0].read() == b'P5 1 1 255 x'


def test_image_whose_header_declares_too_many_pixels_is_refused_before_decoding():
  # 8200 x 8200 = 67 Mpx: above the stated 64 Mpx, below Pillow's own bomb limit (89 Mpx).
  data = _big_png(8200, 8200)
  assert len(data) < 2**20
  with pytest.raises(TooLarge, match=r'^scan\.png: refused unread, it would '
                     r'inflate to 8200x8200 pixels, more than'):
    common.decode_image(data, 'scan.png')
  assert common.decode_image(_big_png(40, 30), 'ok.png').shape == (30, 40, 3)


def _entries(root, files):
  for rel in files:
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
      f.write(rel.encode())
  return common.index_files(root)


IMAGES = r'(?:^|/)(?P<id>\d\d)_training\.(?i:tiff?)$'


def test_two_candidates_for_one_file_are_refused_naming_both(tmp_path):
  entries = _entries(tmp_path, ['DRIVE/training/images/21_training.tif',
                                'old/21_training.tif', 'DRIVE/training/images/22_training.tif'])
  with pytest.raises(ValueError) as e:
    common.find(entries, IMAGES)
  assert str(e.value) == (
      f"two files in the manual dir could be '21': {tmp_path}/DRIVE/training/images/"
      f'21_training.tif and {tmp_path}/old/21_training.tif; move the one that does not belong '
      'out of the manual dir')


def test_an_archive_next_to_its_extracted_copy_is_one_file(tmp_path):
  _entries(tmp_path / 'x', ['DRIVE/training/images/21_training.tif'])
  shutil.make_archive(str(tmp_path / 'DRIVE'), 'zip', tmp_path / 'x')
  os.rename(tmp_path / 'x' / 'DRIVE', tmp_path / 'DRIVE')
  os.rmdir(tmp_path / 'x')
  entries = common.index_files(tmp_path)
  assert sorted(e.path for e in entries) == ['DRIVE.zip/DRIVE/training/images/21_training.tif',
                                              'DRIVE/training/images/21_training.tif']
  found = common.find(entries, IMAGES)
  assert found['21'].member is None  # The plain file is kept.
  # A member found twice in a zip stray elsewhere is still refused.
  with zipfile.ZipFile(tmp_path / 'stray.zip', 'w') as z:
    z.writestr('backup/21_training.tif', b'x')
  with pytest.raises(ValueError, match=r"could be '21': .*21_training\.tif and "
                     r'.*stray\.zip:backup/21_training\.tif'):
    common.find(common.index_files(tmp_path), IMAGES)


def test_builder_refuses_a_stray_copy_and_prepares_nothing(tmp_path):
  manual = tmp_path / 'manual'
  drive_dummy.make(os.fspath(manual), extracted=True)
  images = manual / 'DRIVE' / 'training' / 'images'
  os.makedirs(manual / 'old')
  shutil.copy(images / '23_training.tif', manual / 'old' / '23_training.tif')
  with pytest.raises(ValueError, match=r"^two files in the manual dir could be '23': \S+/DRIVE/"
                     r'training/images/23_training\.tif and \S+/old/23_training\.tif;'):
    testing.build(drive.Builder, manual, tmp_path / 'data')
  assert testing.prepared_dirs(tmp_path / 'data') == []


def test_image_within_the_limits_still_decodes(tmp_path):
  img = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format='PNG')
  with zipfile.ZipFile(tmp_path / 'a.zip', 'w') as z:
    z.writestr('a.png', buf.getvalue())
  [entry] = common.index_files(tmp_path)
  np.testing.assert_array_equal(common.read_image(entry), img)
