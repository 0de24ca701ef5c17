"""main.py's exit code and last line for each way a run can stop (docs/reliability.md)."""

import logging
import types

import pytest

from ds2f_jax import errors, main, reporting


@pytest.mark.parametrize('error, code, line', [
    (errors.Preempted('preempted (SIGTERM) at step 5: checkpoint saved in W', 5), 143,
     'preempted (SIGTERM) at step 5: checkpoint saved in W'),
    (errors.NonFiniteError('training step 3 went non-finite in loss'), 3,
     'error: training step 3 went non-finite in loss'),
    (errors.WorkdirLocked('workdir W is in use by another trainer'), 2,
     'error: workdir W is in use by another trainer'),
    (errors.CheckpointSaveError('checkpoint step 2 could not be written'), 2,
     'error: checkpoint step 2 could not be written'),
    (ValueError('data.hr_size=(65, 64) is not divisible'), 2,
     'error: data.hr_size=(65, 64) is not divisible'),
], ids=['preempted', 'nonfinite', 'locked', 'disk_full', 'bad_value'])
def test_exit_code_and_one_line(error, code, line, monkeypatch, capsys):
  def run(mode, config, workdir):
    raise error

  monkeypatch.setattr(main, '_run', run)
  monkeypatch.setattr(main, 'FLAGS', types.SimpleNamespace(mode='train', config=None,
                                                           workdir='W'))
  with pytest.raises(SystemExit) as e:
    main.main(['main.py'])
  assert e.value.code == code
  assert capsys.readouterr().err.strip().splitlines() == [line]


def test_exit_codes_are_distinct():
  assert (errors.EXIT_BAD_INPUT, errors.EXIT_NONFINITE, errors.EXIT_PREEMPTED) == (2, 3, 143)


@pytest.mark.parametrize('path, level, shown', [
    ('/x/site-packages/orbax/checkpoint/checkpoint_manager.py', 'INFO', False),
    ('/x/site-packages/tensorflow_datasets/core/dataset_builder.py', 'INFO', False),
    ('/x/site-packages/tensorflow_datasets/core/dataset_builder.py', 'WARNING', True),
    ('/x/site-packages/orbax/checkpoint/checkpoint_manager.py', 'ERROR', True),
    ('/repo/ds2f_jax/reporting.py', 'INFO', True),
])
def test_console_filter_drops_library_info_only(path, level, shown):
  levelno = getattr(logging, level)
  record = logging.LogRecord('absl', levelno, path, 1, 'msg', None, None)
  assert reporting.QuietLibraries().filter(record) is shown


@pytest.mark.parametrize('entry', ['main', 'ablate'])
def test_entry_points_install_the_console_filter(entry, monkeypatch):
  from absl import logging as absl_logging
  from ds2f_jax import ablate
  args = types.SimpleNamespace(mode='train', config=None, workdir='W', variants='', seeds=1)
  if entry == 'main':
    module = main
    monkeypatch.setattr(main, '_run', lambda *a: None)
    monkeypatch.setattr(main, 'FLAGS', args)
  else:
    module = ablate
    monkeypatch.setattr(ablate, 'run', lambda *a: None)
    monkeypatch.setattr(ablate.flags, 'FLAGS', args)
  handler = absl_logging.get_absl_handler()
  before = list(handler.filters)
  try:
    module.main(['x'])
    added = [f for f in handler.filters if f not in before]
    assert [type(f) for f in added] == [reporting.QuietLibraries]
  finally:
    handler.filters[:] = before
