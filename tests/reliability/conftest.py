"""Fault-suite fixtures (the summary line CI prints is in tests/conftest.py)."""

import pytest

from tests.reliability import scenario


@pytest.fixture(scope='session')
def reference_run(tmp_path_factory, synthetic_data_dir):
  """An uninterrupted run of the scenario: the workdir every fault run must match."""
  workdir = tmp_path_factory.mktemp('reference') / 'w'
  scenario.run_in_process(scenario.scenario_config(synthetic_data_dir), workdir)
  return str(workdir)
