"""Every builder: a missing, empty or unrelated manual dir says what belongs."""

import importlib

import pytest

from ds2f_jax.datasets import testing

NAMES = ('drive', 'chase_db1', 'hrf', 'stare', 'refuge', 'idrid')
# A file each builder's expectation must name, to point users the right way.
NAMED = {
    'drive': 'DRIVE.zip', 'chase_db1': 'CHASEDB1.zip', 'hrf': 'all.zip',
    'stare': 'labels-ah.tar', 'refuge': 'REFUGE2.zip',
    'idrid': 'A. Segmentation.zip',
}


def _builder_cls(name):
  return importlib.import_module(f'ds2f_jax.datasets.{name}').Builder


@pytest.mark.parametrize('name', NAMES)
def test_registered_name_is_the_folder(name):
  cls = _builder_cls(name)
  assert cls.name == name
  assert cls.CLASS_NAMES[0] == 'background'


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('state', ['missing', 'empty'])
def test_missing_or_empty_manual_dir(name, state, tmp_path):
  manual = tmp_path / 'manual'
  if state == 'empty':
    manual.mkdir()
    (manual / '.DS_Store').write_bytes(b'')  # Hidden files do not count.
  cls = _builder_cls(name)
  with pytest.raises(FileNotFoundError) as e:
    testing.build(cls, manual, tmp_path / 'data')
  msg = str(e.value)
  first = msg.splitlines()[0]
  assert first.startswith(f'{name}: manual_dir ')
  assert str(manual) in first
  assert NAMED[name] in first  # The expected files ...
  assert cls.MANUAL_DOWNLOAD_INSTRUCTIONS.strip() in msg  # ... and how to.
  assert testing.prepared_dirs(tmp_path / 'data') == []


@pytest.mark.parametrize('name', NAMES)
def test_unrelated_files_list_the_missing_ones(name, tmp_path):
  manual = tmp_path / 'manual'
  manual.mkdir()
  (manual / 'notes.txt').write_text('not a dataset')
  cls = _builder_cls(name)
  with pytest.raises(FileNotFoundError, match=r'expected files are missing'):
    testing.build(cls, manual, tmp_path / 'data')
