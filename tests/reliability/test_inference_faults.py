"""Faults of the reading side (eval, predict, export) and of the command line itself.

CASES is the table "Inference and command line" of docs/reliability.md (a test
keeps the two in step), in the form of test_bad_inputs.py: each case is one
line naming the culprit, and leaves nothing behind. Command-line cases run
main.py (a few seconds of imports each, so there are few of them); the rest
call the function main.py would reach.
"""

import os
import re
import shutil
import types

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from ds2f_jax import checkpointing, cli, evaluate, export, inference, predict
from tests import scenario as rel
from tests.reliability import trainer_harness as th

DOC = os.path.join(th.ROOT, 'docs', 'reliability.md')
P = r'\S+'  # A path in a message.


class Ctx:
  """A scratch dir, the prepared synthetic data and a private copy of a finished run."""

  def __init__(self, tmp_path, data_dir, reference_run):
    self.tmp, self.data_dir = tmp_path, data_dir
    self.workdir = str(tmp_path / 'w')
    shutil.copytree(reference_run, self.workdir)

  def config(self, **overrides):
    c = rel.scenario_config(self.data_dir)
    for key, value in overrides.items():
      node = c
      *parents, leaf = key.split('.')
      for p in parents:
        node = node[p]
      node[leaf] = value
    return c

  def main(self, *args):
    """main.py on the copy: (returncode, stderr)."""
    return th.run_main(self.workdir, [f'--config.data.data_dir={self.data_dir}', *args])


def _one_error_line(rc, stderr):
  """The text of main.py's single `error:` line; no traceback, no library noise."""
  assert rc == 2 and 'Traceback' not in stderr, stderr[-3000:]
  lines = [l for l in stderr.splitlines() if l.strip()]
  errors = [l for l in lines if l.startswith('error: ')]
  assert len(errors) == 1, stderr[-3000:]
  noise = [l for l in lines if l not in errors and 'fault point' not in l]
  assert len(noise) <= 2, stderr[-3000:]  # At most a warning or two, never a page.
  raise ValueError(errors[0][len('error: '):])


def _evaluate(**overrides):
  return lambda c: evaluate.evaluate(c.config(**overrides), c.workdir)


def _predict(**overrides):
  def run(c):
    image = c.tmp / 'in'
    image.mkdir()
    from PIL import Image
    Image.new('RGB', (40, 30)).save(image / 'a.png')
    predict.predict(c.config(**overrides), c.workdir, str(image), str(c.tmp / 'out'))
  return run


def _export(**overrides):
  return lambda c: export.export(c.config(**{'export.checkpoint': 'latest', **overrides}),
                                 c.workdir)


def _nan_checkpoint(c):
  """Step 8: step 6 with NaN parameters, as a diverged run would have saved it."""
  with ocp.StandardCheckpointer() as ckptr:
    state = ckptr.restore(os.path.join(c.workdir, 'checkpoints', '6', 'state'))
  state['params'] = jax.tree_util.tree_map(lambda x: np.full_like(x, np.nan), state['params'])
  mngr = checkpointing.create_manager(c.workdir, 10)
  checkpointing.save(mngr, 8, state)
  checkpointing.finish(mngr)
  evaluate.evaluate(c.config(**{'eval.checkpoint': 'latest'}), c.workdir)


def _corrupt_checkpoint(c):
  """A step that stays corrupt is one line, not a retry loop or a traceback."""
  state = os.path.join(c.workdir, 'checkpoints', '4', 'state')
  for root, _, files in os.walk(state):
    for name in files:
      if name != '_METADATA' and 'metadata' not in name.lower():
        path = os.path.join(root, name)
        with open(path, 'r+b') as f:
          f.truncate(max(os.path.getsize(path) // 3, 1))
  evaluate.evaluate(c.config(**{'eval.checkpoint': '4'}), c.workdir)


def _width_mismatch_quiet(c):
  """A workdir without config.json (older runs): the saved shapes catch it, in one line."""
  os.remove(os.path.join(c.workdir, 'config.json'))
  _one_error_line(*c.main('--mode', 'eval', '--config.model.width=8'))


def _config_file(text):
  """main.py with a --config file holding `text` (None: a file that does not exist)."""
  def run(c):
    path = c.tmp / 'my_config.py'
    if text is not None:
      path.write_text(text)
    proc = th.subprocess.run(
        [th.sys.executable, os.path.join(th.ROOT, 'main.py'), '--config', str(path), '--workdir',
         c.workdir + '_new'], capture_output=True, text=True, timeout=300, cwd=th.ROOT,
        env=th.main_env())
    _one_error_line(proc.returncode, proc.stderr)
  return run


def _mode(mode, workdir=None, **named):
  """cli.run_mode as main.py calls it; named: --input/--output/--mask, or config keys."""
  def run(c):
    flag_values = types.SimpleNamespace(input=None, output=None, mask=None)
    overrides = {}
    for key, value in named.items():
      value = value(c) if callable(value) else value
      if key in ('input', 'output', 'mask'):
        setattr(flag_values, key, value)
      else:
        overrides[key.replace('__', '.')] = value
    cli.run_mode(mode, c.config(**overrides), workdir(c) if workdir else c.workdir, flag_values)
  return run


def _a_file(c):
  path = c.tmp / 'a_file'
  path.write_text('not a folder')
  return str(path)


def _config_json_is_folder(c):
  os.remove(os.path.join(c.workdir, 'config.json'))
  os.mkdir(os.path.join(c.workdir, 'config.json'))
  evaluate.evaluate(c.config(), c.workdir)


# (id, what is wrong, trigger, exception, message regex, what must not exist afterwards)
CASES = [
    ('eval_config_differs', "eval with a model key unlike the workdir's",
     _evaluate(**{'model.upscale': 4}), ValueError,
     rf'model\.upscale=4 but {P} was trained with model\.upscale=2 \({P}/config\.json\); drop '
     r'the override or use the config it was trained with', 'eval'),
    ('predict_config_differs', "predict with a model key unlike the workdir's",
     _predict(**{'model.variant': 'seg_only'}), ValueError,
     rf"model\.variant='seg_only' but {P} was trained with model\.variant='ds2f' "
     rf'\({P}/config\.json\); drop the override or use the config it was trained with', 'out'),
    ('export_config_differs', "export with a model key unlike the workdir's",
     _export(**{'data.hr_size': (128, 128)}), ValueError,
     rf'data\.hr_size=\[128, 128\] but {P} was trained with data\.hr_size=\[64, 64\] '
     rf'\({P}/config\.json\); drop the override or use the config it was trained with',
     'export'),
    ('nonfinite_checkpoint', 'eval of a checkpoint holding NaN parameters', _nan_checkpoint,
     ValueError, rf'checkpoint {P}/checkpoints/8 \(step 8\) holds non-finite parameters '
     r'\(\d+ of \d+ arrays hold NaN or Inf, first params/\S+\): the run diverged before it was '
     r'saved; choose an earlier step or train again with a lower learning rate', 'eval'),
    ('corrupt_checkpoint_read', 'eval of a truncated checkpoint', _corrupt_checkpoint,
     ValueError, rf'checkpoint {P}/checkpoints/4 cannot be read: .+', 'eval'),
    ('width_mismatch_quiet', 'eval with another width, no config.json', _width_mismatch_quiet,
     ValueError, rf'checkpoint {P}/checkpoints/6 does not fit this config \((params|batch_stats)/\S+: '
     r'\(.*\) in the checkpoint, \(.*\) in this config\): model\.\* must match the training '
     r'run', 'eval'),
    ('config_missing', 'a --config file that does not exist', _config_file(None), ValueError,
     rf'--config {P}/my_config\.py does not exist', 'new'),
    ('config_syntax_error', 'a --config file with a syntax error',
     _config_file('def get_config(:\n'), ValueError,
     rf'--config {P}/my_config\.py: syntax error at line 1: invalid syntax', 'new'),
    ('config_without_get_config', 'a --config file without get_config',
     _config_file('x = 1\n'), ValueError, rf'--config {P}/my_config\.py defines no get_config\(\)',
     'new'),
    ('config_not_a_configdict', 'a get_config() returning something else',
     _config_file('def get_config():\n  return 5\n'), ValueError,
     rf'--config {P}/my_config\.py: get_config\(\) returned int, not an '
     r'ml_collections\.ConfigDict', 'new'),
    ('workdir_is_a_file', 'a file given as the workdir', _mode('train', workdir=_a_file),
     NotADirectoryError, rf'--workdir {P}/a_file is a file, not a folder', None),
    ('data_dir_is_a_file', 'a file given as data.data_dir',
     _mode('eval', data__data_dir=_a_file), NotADirectoryError,
     rf'data\.data_dir {P}/a_file is a file, not a folder', 'eval'),
    ('manual_dir_is_a_file', 'a file given as data.manual_dir',
     _mode('prepare', data__manual_dir=_a_file), NotADirectoryError,
     rf'data\.manual_dir {P}/a_file is a file, not a folder', None),
    ('output_is_a_file', 'a file given as --output',
     _mode('predict', input=lambda c: c.workdir, output=_a_file), NotADirectoryError,
     rf'--output {P}/a_file is a file, not a folder', None),
    ('workdir_config_is_a_folder', "a folder where the workdir's config.json belongs",
     _config_json_is_folder, ValueError,
     rf"{P}/config\.json cannot be read \(\[Errno 21\] Is a directory: '{P}/config\.json'\); it "
     r'records the config the workdir was trained with', 'eval'),
]


@pytest.fixture
def ctx(tmp_path, synthetic_data_dir, reference_run):
  return Ctx(tmp_path, synthetic_data_dir, reference_run)


@pytest.mark.parametrize('case_id, what, trigger, exc, message, absent', CASES,
                         ids=[c[0] for c in CASES])
def test_inference_fault(ctx, case_id, what, trigger, exc, message, absent):
  del case_id, what
  with pytest.raises(exc) as e:
    trigger(ctx)
  text = e.value.args[0] if e.value.args else str(e.value)
  assert '\n' not in text.strip(), text
  assert re.fullmatch(message, text.strip()), text
  if absent == 'eval':  # The workdir's results are not replaced by wrong ones.
    assert not os.path.exists(os.path.join(ctx.workdir, 'eval'))
  elif absent == 'out':
    assert not os.path.exists(ctx.tmp / 'out') or not os.listdir(ctx.tmp / 'out')
  elif absent == 'new':  # Refused before the workdir was created.
    assert not os.path.exists(ctx.workdir + '_new')
  elif absent == 'export':
    assert not os.path.exists(os.path.join(ctx.workdir, 'export'))


def test_eval_reads_a_step_deleted_under_it(ctx, monkeypatch):
  """14.7: a trainer keeping one checkpoint replaces step 6 by step 8 while eval reads 6."""
  real = ocp.CheckpointManager.restore
  swapped = []

  def restore(self, step, *args, **kwargs):
    if not swapped:  # The trainer saves step 8 and deletes step 6 mid-read.
      d = os.path.join(ctx.workdir, 'checkpoints')
      shutil.copytree(os.path.join(d, '6'), os.path.join(d, '8'))
      shutil.rmtree(os.path.join(d, '6'))
      swapped.append(step)
    return real(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, 'restore', restore)
  restored = inference.restore(ctx.config(), ctx.workdir, 'latest')
  assert swapped == [6] and restored.step == 8
  want = rel.load_checkpoint(ctx.workdir, 8)
  got = jax.tree_util.tree_flatten_with_path(jax.device_get(restored.variables['params']))[0]
  for path, leaf in got:
    np.testing.assert_array_equal(leaf, want["['params']" + jax.tree_util.keystr(path)])


def test_metrics_json_records_config_and_checkpoint(ctx):
  import json
  evaluate.evaluate(ctx.config(**{'eval.checkpoint': '4'}), ctx.workdir)
  with open(os.path.join(ctx.workdir, 'eval', 'test', 'metrics.json')) as f:
    saved = json.load(f)
  assert saved['checkpoint_step'] == 4
  assert saved['checkpoint'].endswith(os.path.join('checkpoints', '4'))
  assert saved['config']['model']['width'] == 4
  assert saved['config']['eval']['checkpoint'] == '4'


def test_docs_table_lists_every_case():
  with open(DOC, encoding='utf-8') as f:
    doc = f.read()
  section = doc[doc.index('## Inference and command line'):]
  section = section[:section.find('\n## ', 1) if '\n## ' in section[1:] else len(section)]
  documented = re.findall(r'^\| `([a-z0-9_]+)` \|', section, flags=re.M)
  assert sorted(documented) == sorted(c[0] for c in CASES)
