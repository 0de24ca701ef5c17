"""Bad inputs: each is one line naming the culprit, and leaves nothing that looks complete.

CASES is the table of docs/reliability.md (a test keeps the two in step). Flag
errors go through main.py (they happen while absl parses the command line);
everything else calls the function main.py would reach.
"""

import io
import os
import re

import numpy as np
import pytest
from PIL import Image

from ds2f_jax.datasets import common, testing
from ds2f_jax.datasets.drive import drive_dataset_builder as drive
from ds2f_jax.datasets.drive.dummy_data import make_dummy_data as drive_dummy
from ds2f_jax import checkpointing, input_pipeline, train
from tests import scenario as rel
from tests.reliability import trainer_harness as th

DOC = os.path.join(th.ROOT, 'docs', 'reliability.md')


class Ctx:
  """What a case may use: a scratch dir, the prepared synthetic data, a finished run."""

  def __init__(self, tmp_path, data_dir, reference_run):
    self.tmp, self.data_dir, self.reference_run = tmp_path, data_dir, reference_run
    self.workdir = str(tmp_path / 'w')

  def config(self, **overrides):
    c = rel.scenario_config(self.data_dir)
    for key, value in overrides.items():
      node = c
      *parents, leaf = key.split('.')
      for p in parents:
        node = node[p]
      node[leaf] = value
    return c

  def train(self, **overrides):
    train.train_and_evaluate(self.config(**overrides), self.workdir)

  def drive_manual(self):
    manual = self.tmp / 'manual'
    drive_dummy.make(os.fspath(manual), extracted=True)
    return manual / 'DRIVE'

  def build_drive(self):
    testing.build(drive.Builder, self.tmp / 'manual', self.tmp / 'data')


def _main_flag(ctx, override):
  rc, stderr = th.run_main(ctx.workdir, [override])
  assert rc == 2 and 'Traceback' not in stderr, stderr[-2000:]
  lines = [l for l in stderr.splitlines() if l.startswith('error: ')]
  assert len(lines) == 1, stderr[-2000:]
  raise ValueError(lines[0][len('error: '):])


def _png(array, mode=None):
  buf = io.BytesIO()
  img = Image.fromarray(array)
  (img.convert(mode) if mode else img).save(buf, format='PNG')
  return buf.getvalue()


def _record(image, mask, name='bad.png'):
  return {'image': image, 'mask': mask[..., None], 'fov': np.ones_like(mask)[..., None],
          'file_name': name.encode()}


def _missing_manual_file(ctx):
  os.remove(ctx.drive_manual() / 'training' / 'images' / '23_training.tif')
  ctx.build_drive()


def _corrupt_image(ctx):
  path = ctx.drive_manual() / 'training' / 'images' / '22_training.tif'
  path.write_bytes(path.read_bytes()[:200])
  ctx.build_drive()


def _mismatched_label(ctx):
  Image.new('P', (30, 29)).save(ctx.drive_manual() / 'training' / '1st_manual' / '24_manual1.gif')
  ctx.build_drive()


def _mask_out_of_range(ctx):
  mask = np.zeros((48, 64), np.uint8)
  mask[3, 4], mask[5, 6] = 255, 7
  input_pipeline.make_example(_record(np.zeros((48, 64, 3), np.uint8), mask), (64, 64), 2,
                              num_classes=2)


def _record_sizes_differ(ctx):
  input_pipeline.make_example(
      _record(np.zeros((48, 64, 3), np.uint8), np.zeros((48, 60), np.uint8)), (64, 64), 2)


def _rgba_record(ctx):
  input_pipeline.make_example(
      _record(np.zeros((48, 64, 4), np.uint8), np.zeros((48, 64), np.uint8)), (64, 64), 2)


def _sixteen_bit_image(ctx):
  common.decode_image(_png(np.full((8, 8), 40000, np.uint16)), 'scan.png')


def _empty_split(ctx):
  ctx.train(**{'data.eval_split': 'validation[50%:50%]'})


def _unknown_split(ctx):
  ctx.train(**{'data.eval_split': 'valdation'})


def _resolve(workdir, which):
  mngr = checkpointing.create_manager(workdir, 3, read_only=True)
  try:
    checkpointing.resolve_step(mngr, which)
  finally:
    mngr.close()


def _checkpoint_step(which):
  return lambda ctx: _resolve(ctx.reference_run, which)


def _no_checkpoint(ctx):
  os.makedirs(os.path.join(ctx.workdir, 'checkpoints'))
  _resolve(ctx.workdir, 'best')


P = r'\S+'  # A path in a message.
# (id, what is wrong, trigger, exception, message regex, what must not exist afterwards)
CASES = [
    ('unknown_key', 'unknown config key', lambda c: _main_flag(c, '--config.model.nam=x'),
     ValueError, r"unknown config key --config\.model\.nam \('nam' is not a key of "
     r"configs/synthetic\.py:tiny \(did you mean 'name'\?\)\)", 'workdir'),
    ('wrong_type', 'wrong type for a key', lambda c: _main_flag(c, '--config.model.width=abc'),
     ValueError, r"flag --config\.model\.width=abc: invalid literal for int\(\) with base 10: "
     r"'abc'", 'workdir'),
    ('wrong_type_bool', 'wrong type for a boolean key',
     lambda c: _main_flag(c, '--config.train.skip_nonfinite_steps=maybe'), ValueError,
     r"flag --config\.train\.skip_nonfinite_steps=maybe: \('Non-boolean argument to boolean "
     r"flag', 'maybe'\)", 'workdir'),
    ('num_classes_1', 'model.num_classes=1', lambda c: c.train(**{'model.num_classes': 1}),
     ValueError, r'model\.num_classes=1: binary tasks use 2 classes with softmax CE '
     r'\(docs/method\.md D7\); 1 is not supported', 'workdir'),
    ('num_classes_vs_dataset', "num_classes not the dataset's",
     lambda c: c.train(**{'model.num_classes': 3}), ValueError,
     r"model\.num_classes=3 but dataset 'synthetic_fundus' has 2 classes \(background, "
     r"vessel\)\.", 'checkpoints'),
    ('hr_not_divisible', 'HR size not divisible by r',
     lambda c: c.train(**{'data.hr_size': (65, 64)}), ValueError,
     r'data\.hr_size=\(65, 64\) is not divisible by model\.upscale=2', 'workdir'),
    ('image_too_small', 'image smaller than the encoder allows',
     lambda c: c.train(**{'data.hr_size': (16, 16)}), ValueError,
     r"LR input \(8, 8\) is too small for model\.name='ds2f_unet': each side must be >= 16 "
     r'\(HR = LR x model\.upscale=2\)', 'workdir'),
    ('crop_too_large', 'crop larger than the HR size',
     lambda c: next(input_pipeline.train_iterator(c.config(**{'data.crop_size': (128, 128)}), 0)),
     ValueError, r'data\.crop_size \(128, 128\) is larger than data\.hr_size \(64, 64\)\.', None),
    ('unknown_dataset', 'unknown dataset name', lambda c: c.train(**{'data.name': 'drvie'}),
     ValueError, rf"data\.name 'drvie' is not a dataset under {P}; available: chase_db1, drive, "
     r'hrf, idrid, refuge, stare, synthetic_fundus\.', 'checkpoints'),
    ('missing_manual_file', 'manual_dir with a missing file', _missing_manual_file,
     FileNotFoundError, rf'drive: 1 of 120 expected files are missing from manual_dir {P}: '
     r'training/images/23_training\.tif', 'prepared'),
    ('corrupt_image', 'corrupt (truncated) image file', _corrupt_image, ValueError,
     rf'{P}/22_training\.tif: cannot decode image \(.+\)', 'prepared'),
    ('image_label_sizes_differ', 'image and label of different sizes', _mismatched_label,
     ValueError, rf'size mismatch: {P}/24_training\.tif is 28x29 \(WxH\) but '
     rf'{P}/24_manual1\.gif is 30x29', 'prepared'),
    ('record_sizes_differ', 'a record whose mask size differs', _record_sizes_differ,
     ValueError, r"example 'bad\.png': image is 64x48 \(WxH\) but its mask is 60x48\.", None),
    ('mask_out_of_range', 'mask values outside the class range', _mask_out_of_range,
     ValueError, r"example 'bad\.png': mask holds class ids \[7, 255\] outside \[0, 2\) for "
     r'model\.num_classes=2\.', None),
    ('rgba_record', 'a 4-channel record reaching the pipeline', _rgba_record, ValueError,
     r"example 'bad\.png': image has shape \(48, 64, 4\); expected \(H, W, 3\) RGB \(the "
     r'builders convert RGBA and grayscale to RGB when they decode\)\.', None),
    ('sixteen_bit_image', '16-bit image where 8-bit RGB is expected', _sixteen_bit_image,
     ValueError, r'scan\.png: expected an 8-bit colour image, got mode I;16', None),
    ('empty_split', 'an empty split', _empty_split, ValueError,
     rf"data\.eval_split='validation\[50%:50%\]' of synthetic_fundus/default/1\.0\.0 is empty "
     rf'\(in {P}\)\.', 'checkpoints'),
    ('unknown_split', 'a split the dataset lacks', _unknown_split, ValueError,
     r"data\.eval_split='valdation' is not a split of synthetic_fundus/default/1\.0\.0; "
     r'available: train, validation, test\.', 'checkpoints'),
    ('missing_checkpoint_step', 'a non-existent checkpoint step', _checkpoint_step('5'),
     FileNotFoundError, rf'checkpoint step 5 not in {P}/checkpoints; available: \[2, 4, 6\]',
     None),
    ('bad_checkpoint_name', 'eval.checkpoint neither best, latest nor a step',
     _checkpoint_step('newest'), ValueError,
     r"eval\.checkpoint='newest': use best, latest or a step number", None),
    ('no_checkpoint', 'evaluating before any training', _no_checkpoint, FileNotFoundError,
     rf'no checkpoint in {P}/checkpoints: train first \(--mode train\)', None),
    ('negative_seed', 'a negative seed', lambda c: c.train(seed=-1), ValueError,
     r'seed=-1 must be a non-negative integer', 'workdir'),
    ('zero_steps', 'num_train_steps=0', lambda c: c.train(num_train_steps=0), ValueError,
     r'num_train_steps=0 must be >= 1', 'workdir'),
    ('bad_dtype', 'an unsupported dtype', lambda c: c.train(dtype='float16'), ValueError,
     r"dtype='float16' must be 'float32' or 'bfloat16'", 'workdir'),
]


@pytest.fixture
def ctx(tmp_path, synthetic_data_dir, reference_run):
  return Ctx(tmp_path, synthetic_data_dir, reference_run)


@pytest.mark.parametrize('case_id, what, trigger, exc, message, absent', CASES,
                         ids=[c[0] for c in CASES])
def test_bad_input(ctx, case_id, what, trigger, exc, message, absent):
  del case_id, what
  with pytest.raises(exc) as e:
    trigger(ctx)
  text = e.value.args[0] if e.value.args else str(e.value)
  assert '\n' not in text.strip() or exc is FileNotFoundError, text
  first = text.strip().splitlines()[0]
  assert re.fullmatch(message, first), first
  # Nothing that looks complete: no workdir at all, no checkpoint, no prepared dataset.
  if absent == 'workdir':
    assert not os.path.exists(ctx.workdir)
  elif absent == 'checkpoints':
    assert rel.checkpoint_entries(ctx.workdir) == []
    assert not os.path.exists(os.path.join(ctx.workdir, 'metrics.jsonl'))
  elif absent == 'prepared':
    assert testing.prepared_dirs(ctx.tmp / 'data') == []


def test_rgba_and_grayscale_images_are_converted_to_rgb():
  rng = np.random.default_rng(0)
  rgba = rng.integers(0, 256, (6, 5, 4), dtype=np.uint8)
  np.testing.assert_array_equal(common.decode_image(_png(rgba), 'a.png'), rgba[..., :3])
  gray = rng.integers(0, 256, (6, 5), dtype=np.uint8)
  np.testing.assert_array_equal(common.decode_image(_png(gray), 'g.png'),
                                np.repeat(gray[..., None], 3, axis=-1))


def test_docs_table_lists_every_case():
  with open(DOC, encoding='utf-8') as f:
    doc = f.read()
  section = doc[doc.index('## Bad inputs'):]
  section = section[:section.index('\n## ', 1)]
  documented = re.findall(r'^\| `([a-z0-9_]+)` \|', section, flags=re.M)
  assert sorted(documented) == sorted(c[0] for c in CASES)
