"""main.py's exit code and last line for each way a run can stop (docs/reliability.md)."""

import logging
import types

import pytest

from ds2f_jax import cli, errors, main, reporting


@pytest.mark.parametrize('entry', ['main', 'ablate'])
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
    (IsADirectoryError(21, 'Is a directory', 'W/metrics.jsonl'), 2,
     'error: W/metrics.jsonl: Is a directory'),
], ids=['preempted', 'nonfinite', 'locked', 'disk_full', 'bad_value', 'path_type'])
def test_exit_code_and_one_line(error, code, line, entry, monkeypatch, capsys):
  """Both entry points map every stop to its code, and start jax.distributed first."""
  from ds2f_jax import ablate, distributed
  started = []
  monkeypatch.setattr(distributed, 'initialize_from_env', lambda: started.append(True))

  def run(*args):
    assert started, 'jax.distributed must start before the run'
    raise error

  if entry == 'main':
    module = main
    monkeypatch.setitem(cli.MODES, 'train', run)
    monkeypatch.setattr(main, 'FLAGS', types.SimpleNamespace(mode='train', config=None,
                                                             workdir='W', output=None))
  else:
    module = ablate
    monkeypatch.setattr(ablate, 'run', run)
    monkeypatch.setattr(ablate.flags, 'FLAGS', types.SimpleNamespace(
        config=None, workdir='W', variants=['ds2f'], seeds=1))
  with pytest.raises(SystemExit) as e:
    module.main(['x'])
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
  args = types.SimpleNamespace(mode='train', config=None, workdir='W', variants='', seeds=1,
                               output=None)
  if entry == 'main':
    module = main
    monkeypatch.setitem(cli.MODES, 'train', lambda *a: None)
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
