"""Shared fixtures: one prepared synthetic dataset and one reference training run per
test run (shared by the pytest-xdist workers), and a persistent XLA cache."""

import contextlib
import fcntl
import os
import shutil

# The suite compiles hundreds of tiny programs: LLVM's optimisation of them costs
# more time than it saves (a third of a train step's compile). Subprocesses inherit it.
# (Once: pytest-xdist's workers inherit the controller's environment.)
if '--xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = ' '.join(
      filter(None, [os.environ.get('XLA_FLAGS'), '--xla_backend_optimization_level=0']))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest

# Identical programs compiled by several tests (and by their subprocesses) compile once.
# One spelling of the path everywhere: JAX writes the cache directory into the compile
# options it hashes, so '<repo>/tests/../.xla_cache' and '<repo>/.xla_cache' are two caches.
CACHE_DIR = os.path.abspath(os.environ.get(
    'DS2F_TEST_XLA_CACHE', os.path.join(os.path.dirname(__file__), '..', '.xla_cache')))
os.environ['DS2F_TEST_XLA_CACHE'] = CACHE_DIR
jax.config.update('jax_compilation_cache_dir', CACHE_DIR)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
# ... and the tests' subprocesses (main.py runs, harnesses) share the same cache.
os.environ['JAX_COMPILATION_CACHE_DIR'] = CACHE_DIR
os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0.5'


def _shared_dir(tmp_path_factory):
  """A directory all pytest-xdist workers of this run see: their temp dirs are siblings."""
  base = tmp_path_factory.getbasetemp()
  return base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base


@contextlib.contextmanager
def _exclusive(lock_path):
  """One worker at a time; the others wait, then find the work done."""
  with open(lock_path, 'a') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope='session')
def synthetic_data_dir(tmp_path_factory):
  """The synthetic_fundus dataset, built once per test run (shared by the workers)."""
  from configs import synthetic
  from ds2f_jax import distributed
  data_dir = str(_shared_dir(tmp_path_factory) / 'tfds')
  cfg = synthetic.get_config('tiny')
  cfg.data.data_dir = data_dir
  distributed.prepare_dataset(cfg.data)  # As main.py does: one builder, the others wait.
  return data_dir


@pytest.fixture(scope='session')
def reference_run(tmp_path_factory, synthetic_data_dir):
  """The shared 6-step scenario (tests/scenario.py), run once per test run
  without interruption: what the training tests read and every fault run must match.
  Read-only: tests that change a workdir copy it."""
  from tests import scenario
  shared = _shared_dir(tmp_path_factory)
  workdir, done = shared / 'reference' / 'w', shared / 'reference' / 'done'
  with _exclusive(shared / 'reference.lock'):
    if not done.exists():
      shutil.rmtree(workdir, ignore_errors=True)  # Left by a worker that crashed mid-run.
      scenario.run_in_process(scenario.scenario_config(synthetic_data_dir), workdir)
      done.touch()
  return str(workdir)


@pytest.fixture
def tiny_config(synthetic_data_dir):
  from configs import synthetic
  cfg = synthetic.get_config('tiny')
  cfg.data.data_dir = synthetic_data_dir
  return cfg


# ---------------------------------------------------------------------------
# Summary of the fault suite: one line at the end of the terminal report,
# 'reliability: N cases, P passed ...', counted from the reports of items under
# tests/reliability/. Here, not in that folder's conftest: with pytest-xdist only
# the controller writes the report, and it loads this file, not that one.

_OUTCOMES = {}


def pytest_runtest_logreport(report):
  if not report.nodeid.startswith('tests/reliability/'):
    return
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
