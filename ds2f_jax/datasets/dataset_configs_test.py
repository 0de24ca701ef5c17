"""configs/<name>.py agree with the builders they name."""

import importlib

import pytest

NAMES = ('drive', 'chase_db1', 'hrf', 'stare', 'refuge', 'idrid')


@pytest.mark.parametrize('name', NAMES)
def test_config_matches_its_builder(name):
  config = importlib.import_module(f'configs.{name}').get_config()
  builder_cls = importlib.import_module(f'ds2f_jax.datasets.{config.data.name}').Builder
  assert config.data.name == name
  if config.data.config:
    assert config.data.config in [c.name for c in builder_cls.BUILDER_CONFIGS]
  else:
    assert not builder_cls.BUILDER_CONFIGS
  h, w = config.data.hr_size
  assert h % config.model.upscale == 0 and w % config.model.upscale == 0
  assert config.model.num_classes == len(builder_cls.CLASS_NAMES)
  assert config.batch_size >= 2  # BatchNorm (docs/method.md §Training recipe).
  assert config.num_train_steps > 0


@pytest.mark.parametrize('name', NAMES)
def test_builder_metadata_comes_from_readme_and_bib(name, tmp_path):
  builder = importlib.import_module(f'ds2f_jax.datasets.{name}').Builder(
      data_dir=str(tmp_path))
  assert builder.info.citation.startswith('@article{')
  first_word = {'drive': 'DRIVE', 'chase_db1': 'CHASE_DB1', 'hrf': 'HRF',
                'stare': 'STARE', 'refuge': 'REFUGE', 'idrid': 'IDRiD'}[name]
  assert builder.info.description.split()[0] == first_word
