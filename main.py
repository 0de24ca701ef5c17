"""DS2F in JAX: one entry point, one call per mode.

  python main.py --config configs/synthetic.py --workdir /tmp/ds2f_demo
  python main.py --config configs/drive.py --workdir W --mode eval --config.eval.split=test
  python main.py --config configs/drive.py --workdir W --mode predict --input IMG_OR_DIR \
      --output OUT_DIR [--mask MASK_OR_DIR]
  python main.py --config configs/drive.py --workdir W --mode export   # -> W/export/
  python main.py --config configs/default.py --workdir W --mode import --input official.pth

Multi-process jobs (TPU pod slices, SLURM, JAX_COORDINATOR_ADDRESS) start
jax.distributed before anything else: see ds2f_jax/distributed.py.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from ds2f_jax import errors

config_flags.DEFINE_config_file('config', None, 'A configs/*.py file (plus --config.key=value).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Checkpoints, logs and reports go here.')
flags.DEFINE_enum('mode', 'train', ['train', 'prepare', 'eval', 'predict', 'export', 'import'],
                  'What to do.')
flags.DEFINE_string('input', None, '--mode predict: an image file or a folder of images. '
                    '--mode import: an official DS2F PyTorch checkpoint (.pth).')
flags.DEFINE_string('output', None, '--mode predict: folder for the probability maps, masks '
                    'and overlays.')
flags.DEFINE_string('mask', None, '--mode predict: optional ground truth (a file for a file '
                    '--input, a folder of same-named masks for a folder); overlays then show '
                    'TP/FP/FN.')
flags.mark_flags_as_required(['config'])
FLAGS = flags.FLAGS


def _run(mode, config, workdir):
  if mode == 'prepare':
    from ds2f_jax import distributed
    builder = distributed.prepare_dataset(config.data)
    logging.info('Prepared %s in %s.', builder.info.full_name, builder.data_dir)
    return
  if workdir is None:
    raise ValueError(f'--workdir is required for --mode {mode}')
  if mode == 'eval':
    from ds2f_jax import evaluate
    evaluate.evaluate(config, workdir)
    return
  if mode == 'predict':
    from ds2f_jax import predict
    result = predict.predict(config, workdir, FLAGS.input, FLAGS.output, FLAGS.mask)
    if result['failed']:
      names = ', '.join(sorted(result['failed']))
      raise ValueError(f'{len(result["failed"])} file(s) could not be used: {names} (the other '
                       f'{len(result["written"])} image(s) were written to {FLAGS.output})')
    return
  if mode == 'import':
    from ds2f_jax import import_official
    import_official.import_checkpoint(config, workdir, FLAGS.input)
    return
  if mode == 'export':
    from ds2f_jax import export
    export.export(config, workdir)
    return
  from ds2f_jax import train
  train.train_and_evaluate(config, workdir)


def main(argv):
  from ds2f_jax import reporting
  reporting.quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    from ds2f_jax import distributed
    distributed.initialize_from_env()  # Before any JAX computation.
    _run(FLAGS.mode, FLAGS.config, FLAGS.workdir)
  except errors.Preempted as e:  # A checkpoint was saved: rerun to resume.
    print(e, file=sys.stderr)
    sys.exit(errors.EXIT_PREEMPTED)
  except errors.NonFiniteError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(errors.EXIT_NONFINITE)
  except (ValueError, FileNotFoundError, PermissionError, KeyError, errors.WorkdirLocked,
          errors.CheckpointSaveError) as e:
    # Bad input: one line that names the culprit, not a traceback.
    print(f'error: {e.args[0] if e.args else e}', file=sys.stderr)
    sys.exit(errors.EXIT_BAD_INPUT)


def _bad_override(argv) -> str:
  """Names the first --config.key override that the config file does not define."""
  import difflib
  import importlib.util
  path = None
  for i, a in enumerate(argv):
    if a.startswith('--config='):
      path = a.split('=', 1)[1]
    elif a == '--config' and i + 1 < len(argv):
      path = argv[i + 1]
  try:
    spec = importlib.util.spec_from_file_location('_cfg', path.split(':')[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
  except Exception:  # pylint: disable=broad-except
    return 'an override'
  for a in argv:
    if not a.startswith('--config.'):
      continue
    key = a[len('--config.'):].split('=')[0]
    node = config
    for part in key.split('.'):
      if not hasattr(node, 'keys') or part not in node:
        close = difflib.get_close_matches(part, list(node.keys()) if hasattr(node, 'keys') else [])
        hint = f' (did you mean {close[0]!r}?)' if close else ''
        return f'--config.{key} ({part!r} is not a key of {path}{hint})'
      node = node[part]
  return 'an override'


def _parse_flags(argv):
  """absl parsing, with unknown or mistyped --config.key overrides as one-line errors."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    print(f'error: {e}', file=sys.stderr)
  except (AttributeError, KeyError):  # A locked ConfigDict refusing an unknown key.
    print(f'error: unknown config key {_bad_override(argv)}', file=sys.stderr)
  sys.exit(2)


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
