"""Fault-suite fixtures, and the summary line CI prints: 'reliability: N cases, P passed ...'."""

import pytest

from tests.reliability import scenario

# ---------------------------------------------------------------------------
# Summary: one line at the end of the terminal report, counted from the
# reports of items under this directory only (conftest hooks are local).

_OUTCOMES = {}


def pytest_runtest_logreport(report):
  outcome = _OUTCOMES.get(report.nodeid)
  if report.failed:
    _OUTCOMES[report.nodeid] = 'failed'
  elif report.skipped and outcome is None:
    _OUTCOMES[report.nodeid] = 'skipped'
  elif report.when == 'call' and report.passed and outcome is None:
    _OUTCOMES[report.nodeid] = 'passed'


def pytest_terminal_summary(terminalreporter):
  if not _OUTCOMES:
    return
  counts = {k: sum(v == k for v in _OUTCOMES.values()) for k in ('passed', 'failed', 'skipped')}
  terminalreporter.write_line(
      f'reliability: {len(_OUTCOMES)} cases, {counts["passed"]} passed, '
      f'{counts["failed"]} failed, {counts["skipped"]} skipped')


@pytest.fixture(scope='session')
def reference_run(tmp_path_factory, synthetic_data_dir):
  """An uninterrupted run of the scenario: the workdir every fault run must match."""
  workdir = tmp_path_factory.mktemp('reference') / 'w'
  scenario.run_in_process(scenario.scenario_config(synthetic_data_dir), workdir)
  return str(workdir)
