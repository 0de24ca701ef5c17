"""Shared fixtures: one prepared synthetic dataset and a persistent XLA cache per session."""

import os

import jax
import pytest

# Identical programs compiled by several tests (and by their subprocesses) compile once.
CACHE_DIR = os.environ.setdefault(
    'DS2F_TEST_XLA_CACHE', os.path.join(os.path.dirname(__file__), '..', '.xla_cache'))
jax.config.update('jax_compilation_cache_dir', CACHE_DIR)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


@pytest.fixture(scope='session')
def synthetic_data_dir(tmp_path_factory):
  """The synthetic_fundus dataset, built once into a session temp dir."""
  from configs import synthetic
  from ds2f_jax import input_pipeline
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  cfg = synthetic.get_config('tiny')
  cfg.data.data_dir = data_dir
  input_pipeline.prepare(cfg.data)
  return data_dir


@pytest.fixture
def tiny_config(synthetic_data_dir):
  from configs import synthetic
  cfg = synthetic.get_config('tiny')
  cfg.data.data_dir = synthetic_data_dir
  return cfg
