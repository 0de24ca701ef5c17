"""The command-line runner shared by main.py and `python -m ds2f_jax.ablate`.

One place for what every entry point owes its user (docs/reliability.md):
flag and config-file errors as one `error:` line (exit 2) before anything runs,
paths of the wrong type refused by name, jax.distributed started before any
JAX computation, and each way a run can stop mapped to its exit code
(`errors`). Kept free of JAX imports at module level, like `errors`, so that a
flag error costs no JAX import.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from ds2f_jax import errors

FLAGS = flags.FLAGS


def define_config_flag(help_text: str) -> None:
  config_flags.DEFINE_config_file('config', None, help_text, lock_config=True)


# ---------------------------------------------------------------------------
# Modes of main.py: name -> function(config, workdir, flag_values). Adding a
# mode is one entry here (main.py's --mode choices are these keys).


def _prepare(config, workdir, flag_values):
  del workdir, flag_values
  from absl import logging
  from ds2f_jax import distributed
  builder = distributed.prepare_dataset(config.data)
  logging.info('Prepared %s in %s.', builder.info.full_name, builder.data_dir)


def _eval(config, workdir, flag_values):
  del flag_values
  from ds2f_jax import evaluate
  evaluate.evaluate(config, workdir)


def _predict(config, workdir, flag_values):
  from ds2f_jax import predict
  result = predict.predict(config, workdir, flag_values.input, flag_values.output,
                           flag_values.mask)
  if result['failed']:
    names = ', '.join(sorted(result['failed']))
    raise ValueError(f'{len(result["failed"])} file(s) could not be used: {names} (the other '
                     f'{len(result["written"])} image(s) were written to {flag_values.output})')


def _export(config, workdir, flag_values):
  del flag_values
  from ds2f_jax import export
  export.export(config, workdir)


def _import(config, workdir, flag_values):
  from ds2f_jax import import_official
  import_official.import_checkpoint(config, workdir, flag_values.input)


def _train(config, workdir, flag_values):
  del flag_values
  from ds2f_jax import train
  train.train_and_evaluate(config, workdir)


MODES = {
    'train': _train,
    'prepare': _prepare,
    'eval': _eval,
    'predict': _predict,
    'export': _export,
    'import': _import,
}
NEEDS_NO_WORKDIR = ('prepare',)


def run_mode(mode: str, config, workdir: str | None, flag_values) -> None:
  """main.py's --mode, after the path checks every mode shares."""
  if workdir is None and mode not in NEEDS_NO_WORKDIR:
    raise ValueError(f'--workdir is required for --mode {mode}')
  check_folders(config, {'--workdir': workdir,
                         '--output': getattr(flag_values, 'output', None)})
  MODES[mode](config, workdir, flag_values)


# ---------------------------------------------------------------------------
# Paths.

# Config keys that name folders.
FOLDER_KEYS = ('data.data_dir', 'data.manual_dir')


def check_folders(config, named: dict) -> None:
  """A file where a folder is expected (the workdir, --output, data.data_dir,
  data.manual_dir) is one line naming it; missing folders are created later."""
  paths = dict(named)
  if config is not None:
    for key in FOLDER_KEYS:
      node = config
      for part in key.split('.'):
        node = node.get(part) if hasattr(node, 'get') else None
      paths[key] = node
  for name, path in paths.items():
    if path and os.path.exists(path) and not os.path.isdir(path):
      raise NotADirectoryError(f'{name} {path} is a file, not a folder')


# ---------------------------------------------------------------------------
# Running: exit codes.


def _message(e: BaseException) -> str:
  """One line: our messages as they are, an OS error as 'PATH: reason'."""
  if isinstance(e, OSError) and e.filename is not None and e.strerror:
    where = str(e.filename) + (f' -> {e.filename2}' if e.filename2 else '')
    return f'{where}: {e.strerror}'
  text = str(e.args[0] if e.args else e).strip()
  return text.splitlines()[0] if text else type(e).__name__


def run(argv, fn, *args) -> None:
  """Calls fn(*args) as a program: jax.distributed first, exit codes for each stop."""
  from ds2f_jax import reporting
  reporting.quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    from ds2f_jax import distributed
    distributed.initialize_from_env()  # Before any JAX computation.
    fn(*args)
  except errors.Preempted as e:  # A checkpoint was saved: rerun to resume.
    print(e, file=sys.stderr)
    sys.exit(errors.EXIT_PREEMPTED)
  except errors.NonFiniteError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(errors.EXIT_NONFINITE)
  except (ValueError, KeyError, OSError, errors.WorkdirLocked) as e:
    # Bad input (OSError: a path of the wrong type, unreadable or unwritable, a
    # full disk): one line that names the culprit, not a traceback.
    print(f'error: {_message(e)}', file=sys.stderr)
    sys.exit(errors.EXIT_BAD_INPUT)


def start(main) -> None:
  """app.run(main) with this module's flag parsing."""
  _config_imports(sys.argv)
  app.run(main, flags_parser=parse_flags)


def _config_imports(argv) -> None:
  """Config files import their siblings as the `configs` package
  (configs/synthetic.py: `from configs import default`). `python main.py` in a
  checkout has the checkout on sys.path; the installed `ds2f` command appends
  the folder above the --config file's folder instead."""
  path = _config_arg(argv)
  if path:
    root = os.path.dirname(os.path.dirname(os.path.abspath(path.split(':')[0])))
    if root not in sys.path:
      sys.path.append(root)


# ---------------------------------------------------------------------------
# Flags: the --config file and its overrides.


def _config_arg(argv) -> str | None:
  path = None
  for i, a in enumerate(argv):
    if a.startswith('--config='):
      path = a.split('=', 1)[1]
    elif a == '--config' and i + 1 < len(argv):
      path = argv[i + 1]
  return path


def load_config(spec: str):
  """--config FILE[:ARG] -> the ConfigDict, or a one-line ValueError naming the file."""
  from ml_collections import ConfigDict
  path, _, arg = spec.partition(':')
  if not os.path.exists(path):
    raise ValueError(f'--config {path} does not exist')
  if not os.path.isfile(path):
    raise ValueError(f'--config {path} is a folder, not a config file (configs/*.py)')
  try:
    module_spec = importlib.util.spec_from_file_location('_ds2f_config', path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
  except SyntaxError as e:
    raise ValueError(f'--config {path}: syntax error at line {e.lineno}: {e.msg}') from None
  except Exception as e:  # pylint: disable=broad-except  # A config file can raise anything.
    raise ValueError(f'--config {path} cannot be loaded: {type(e).__name__}: '
                     f'{_message(e)}') from None
  get_config = getattr(module, 'get_config', None)
  if not callable(get_config):
    raise ValueError(f'--config {path} defines no get_config()')
  try:
    config = get_config(*([arg] if arg else []))
  except Exception as e:  # pylint: disable=broad-except
    call = f'get_config({arg!r})' if arg else 'get_config()'
    raise ValueError(f'--config {path}: {call} raised {type(e).__name__}: {_message(e)}') from None
  if not isinstance(config, ConfigDict):
    raise ValueError(f'--config {path}: get_config() returned {type(config).__name__}, not an '
                     'ml_collections.ConfigDict')
  return config


def _bad_override(argv, spec: str, config) -> str:
  """Names the first --config.key override that the config does not define."""
  for a in argv:
    if not a.startswith('--config.'):
      continue
    key = a[len('--config.'):].split('=')[0]
    node = config
    for part in key.split('.'):
      if not hasattr(node, 'keys') or part not in node:
        close = difflib.get_close_matches(part, list(node.keys()) if hasattr(node, 'keys') else [])
        hint = f' (did you mean {close[0]!r}?)' if close else ''
        return f'--config.{key} ({part!r} is not a key of {spec}{hint})'
      node = node[part]
  return 'an override'


def parse_flags(argv):
  """absl parsing; a bad --config file, an unknown or mistyped override, or a bad
  flag value is one `error:` line and exit 2."""
  spec = _config_arg(argv)
  try:
    config = load_config(spec) if spec else None
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(errors.EXIT_BAD_INPUT)
  try:
    return FLAGS(argv)
  except flags.Error as e:
    print(f'error: {_message(e)}', file=sys.stderr)
  except (AttributeError, KeyError):  # A locked ConfigDict refusing an unknown key.
    name = _bad_override(argv, spec, config) if config is not None else 'an override'
    print(f'error: unknown config key {name}', file=sys.stderr)
  sys.exit(errors.EXIT_BAD_INPUT)
