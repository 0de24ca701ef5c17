"""Exports and predictions a careless user damages: one line naming the file, nothing replaced.

CASES is the table "Exports, serving and predict outputs" of docs/reliability.md
(a test keeps the two in step). Each case damages a copy of one export (made
without training: the export path is under test) or builds a predict input
folder, and must be refused with one line; the export cases are also run
through the serving CLI, which must print that line after `error: ` and exit 2.
"""

import contextlib
import hashlib
import io
import json
import os
import re
import shutil

import jax
import numpy as np
import pytest
from PIL import Image

from ds2f_jax import checkpointing, export, predict, serving, sharding, train
from tests.reliability import trainer_harness as th

DOC = os.path.join(th.ROOT, 'docs', 'reliability.md')
SECTION = '## Exports, serving and predict outputs'


@pytest.fixture(scope='module')
def exported(tmp_path_factory, synthetic_data_dir):
  """(config, workdir, export dir) of an initialised tiny ds2f model."""
  from configs import synthetic
  cfg = synthetic.get_config('tiny')
  cfg.data.data_dir = synthetic_data_dir
  workdir = str(tmp_path_factory.mktemp('serving_faults'))
  mesh = sharding.create_mesh(jax.devices()[:1])
  model, tx = train.create_model(cfg), train.create_optimizer(cfg)
  mngr = checkpointing.create_manager(workdir, 1)
  checkpointing.save(mngr, 1, train.init_state(cfg, model, tx, mesh))
  mngr.wait_until_finished()
  mngr.close()
  cfg.export.checkpoint = cfg.eval.checkpoint = 'latest'
  return cfg, workdir, export.export(cfg, workdir)


class Ctx:
  """A scratch copy of the export (E) and a scratch folder."""

  def __init__(self, tmp_path, exported):
    self.cfg, self.workdir, source = exported
    self.tmp = tmp_path
    self.export = str(tmp_path / 'export')
    shutil.copytree(source, self.export)

  def path(self, name):
    return os.path.join(self.export, name)

  def info(self):
    with open(self.path(serving.INFO_FILE), encoding='utf-8') as f:
      return json.load(f)

  def write_info(self, info):
    with open(self.path(serving.INFO_FILE), 'w', encoding='utf-8') as f:
      json.dump(info, f)

  def replace(self, name, data: bytes, rehash=True):
    """Writes `data` to an export file, with a matching sha256 in the manifest if rehash."""
    with open(self.path(name), 'wb') as f:
      f.write(data)
    if rehash:
      info = self.info()
      info['files'][name] = hashlib.sha256(data).hexdigest()
      self.write_info(info)

  def edit_info(self, edit):
    info = self.info()
    edit(info)
    self.write_info(info)

  def load(self, verify=True):
    serving.Predictor.load(self.export, verify=verify)

  def images(self, *names):
    folder = self.tmp / 'images'
    folder.mkdir(exist_ok=True)
    for name in names:
      Image.fromarray(np.full((20, 24, 3), 90, np.uint8)).save(folder / name)
    return folder


def _outside(ctx, entry):
  def edit(info):
    info['files'][entry] = '0' * 64
  ctx.edit_info(edit)
  ctx.load()


def _symlink_out(ctx):
  target = ctx.tmp / 'elsewhere.bin'
  target.write_bytes(b'x')
  os.symlink(target, ctx.path('link.bin'))
  _outside(ctx, 'link.bin')


def _corrupt_exported(ctx, rehash):
  with open(ctx.path(serving.EXPORTED_FILE), 'rb') as f:
    blob = f.read()
  ctx.replace(serving.EXPORTED_FILE, blob[:len(blob) // 2], rehash)
  ctx.load(verify=rehash)


def _params(ctx, data):
  ctx.replace(serving.PARAMS_FILE, data)
  ctx.load()


def _predict(ctx, *names):
  folder = ctx.images(*names)
  predict.predict(ctx.cfg, ctx.workdir, str(folder), str(ctx.tmp / 'out'))


def _serving_cli(ctx, *names):
  paths = []
  for i, name in enumerate(names):  # Each in its own folder: only the names meet.
    paths.append(str(ctx.images() / str(i) / name))
    os.makedirs(os.path.dirname(paths[-1]))
    Image.fromarray(np.full((20, 24, 3), 90, np.uint8)).save(paths[-1])
  err = io.StringIO()
  with contextlib.redirect_stderr(err):
    rc = serving.main([ctx.export, *paths, '--output', str(ctx.tmp / 'out')])
  lines = err.getvalue().splitlines()
  assert rc == 2 and len(lines) == 1 and lines[0].startswith('error: '), (rc, lines)
  raise ValueError(lines[0][len('error: '):])


def _empty_image(ctx):
  serving.Predictor.load(ctx.export).predict(np.zeros((0, 5, 3), np.uint8))


E = '{E}'  # The export directory, in messages.
# (id, what is wrong, trigger, exception, message regex with {E}, is it an export-loading case)
CASES = [
    ('export_no_manifest', '`export_info.json` without its `files` list',
     lambda c: (c.edit_info(lambda i: i.pop('files')), c.load()), ValueError,
     rf'{E}/export_info\.json: files is missing; the file is damaged or hand-edited: re-export '
     r'the model', True),
    ('export_no_manifest_unverified', 'the same, loaded with `verify=False`',
     lambda c: (c.edit_info(lambda i: i.pop('files')), c.load(verify=False)), ValueError,
     rf'{E}/export_info\.json: files is missing; the file is damaged or hand-edited: re-export '
     r'the model', False),
    ('export_manifest_incomplete', '`files` without `params.msgpack`',
     lambda c: (c.edit_info(lambda i: i['files'].pop(serving.PARAMS_FILE)), c.load()), ValueError,
     rf'{E}/export_info\.json: files does not list params\.msgpack: the export cannot be '
     r'verified; re-export the model', True),
    ('export_manifest_parent', 'a `files` entry `../x`', lambda c: _outside(c, '../x'),
     ValueError, rf"{E}/export_info\.json: files entry '\.\./x' points outside {E}; refused", True),
    ('export_manifest_absolute', 'a `files` entry with an absolute path',
     lambda c: _outside(c, '/etc/hostname'), ValueError,
     rf"{E}/export_info\.json: files entry '/etc/hostname' points outside {E}; refused", True),
    ('export_manifest_symlink', 'a `files` entry linking outside the folder', _symlink_out,
     ValueError, rf"{E}/export_info\.json: files entry 'link\.bin' points outside {E}; refused",
     True),
    ('export_info_not_json', 'a truncated `export_info.json`',
     lambda c: (c.replace(serving.INFO_FILE, b'{"format": "ds2f', rehash=False), c.load()),
     ValueError, rf'{E}/export_info\.json is not valid JSON: Unterminated string starting at: '
     r'line 1 column 12 \(char 11\)', True),
    ('export_info_not_object', '`export_info.json` holding a list',
     lambda c: (c.replace(serving.INFO_FILE, b'[1, 2]', rehash=False), c.load()), ValueError,
     rf'{E}/export_info\.json: expected a JSON object, got list', True),
    ('export_info_bad_value', 'a malformed `input.lr_size`',
     lambda c: (c.edit_info(lambda i: i['input'].update(lr_size='32x32')), c.load()), ValueError,
     rf"{E}/export_info\.json: input\.lr_size must be a list of 2 positive integers, got "
     r"'32x32'", True),
    ('exported_corrupt', 'a corrupt `model.jax_exported` with a matching sha256',
     lambda c: _corrupt_exported(c, rehash=True), ValueError,
     rf'{E}/model\.jax_exported: not a readable jax\.export artifact, so the file is corrupt or '
     r'not written by --mode export \(.+\): re-export or copy it again', True),
    ('exported_corrupt_unverified', 'a corrupt `model.jax_exported`, `verify=False`',
     lambda c: _corrupt_exported(c, rehash=False), ValueError,
     rf'{E}/model\.jax_exported: not a readable jax\.export artifact, so the file is corrupt or '
     r'not written by --mode export \(.+\): re-export or copy it again', False),
    ('params_deeply_nested', 'a deeply nested `params.msgpack`',
     lambda c: _params(c, b'\x91' * 100_000 + b'\xc0'), ValueError,
     rf'{E}/params\.msgpack: unreadable parameters \(msgpack data nested deeper than 64 levels '
     r'at offset 64: not a parameter tree\)', True),
    ('params_malformed', 'a `params.msgpack` of another format', lambda c: _params(c, b'\xc1'),
     ValueError, rf'{E}/params\.msgpack: unreadable parameters \(unsupported msgpack type byte '
     r'0xc1 at offset 0\)', True),
    ('params_bad_key', 'a `params.msgpack` map with a list as key',
     lambda c: _params(c, b'\x81\x90\xc0'), ValueError,
     rf'{E}/params\.msgpack: unreadable parameters \(msgpack map key of type list at offset 2\)',
     True),
    ('params_bad_array', 'a `params.msgpack` array of an unknown dtype',
     lambda c: _params(c, b'\x81\xa1p\xc7\x0a\x01\x93\x91\x01\xa4nope\xc4\x00'), ValueError,
     rf"{E}/params\.msgpack: unreadable parameters \(unknown array dtype 'nope' in msgpack "
     r'data\)', True),
    ('predict_output_collision', '`--input` holding a.png, a.jpg and a_png.png',
     lambda c: _predict(c, 'a.png', 'a.jpg', 'a_png.png'), ValueError,
     r'--input: a\.png and a_png\.png would both write a_png_prob\.png; rename one of them '
     r'\(nothing was written\)', False),
    ('serving_output_collision', 'serving two images named A.png and a.png',
     lambda c: _serving_cli(c, 'A.png', 'a.png'), ValueError,
     r'\S+/0/A\.png and \S+/1/a\.png would both write a_mask\.png; rename one \(nothing was '
     r'written\)', False),
    ('serving_empty_image', 'an image with no pixels, given to `Predictor`', _empty_image,
     ValueError, r'image of shape \(0, 5, 3\) is empty: each side must be >= 1 pixel', False),
]


@pytest.fixture
def ctx(tmp_path, exported):
  return Ctx(tmp_path, exported)


@pytest.mark.parametrize('case_id, what, trigger, exc, message, via_cli', CASES,
                         ids=[c[0] for c in CASES])
def test_serving_fault(ctx, case_id, what, trigger, exc, message, via_cli):
  del case_id, what
  message = message.replace(E, re.escape(ctx.export))
  with pytest.raises(exc) as e:
    trigger(ctx)
  text = str(e.value.args[0] if e.value.args else e.value)
  assert '\n' not in text.strip(), text
  assert re.fullmatch(message, text), text
  assert not os.path.exists(ctx.tmp / 'out')  # Nothing written, nothing replaced.
  if via_cli:
    image = ctx.images('eye.png') / 'eye.png'
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
      rc = serving.main([ctx.export, str(image), '--output', str(ctx.tmp / 'out')])
    lines = err.getvalue().splitlines()
    assert rc == 2 and len(lines) == 1, (rc, lines)
    assert re.fullmatch('error: ' + message, lines[0]), lines[0]
    assert not os.path.exists(ctx.tmp / 'out')


def test_shared_names_get_distinct_outputs(ctx):
  """a.png and a.jpg both written, as a_png_* and a_jpg_*; b.png keeps its name."""
  folder = ctx.images('a.png', 'a.jpg', 'b.png')
  result = predict.predict(ctx.cfg, ctx.workdir, str(folder), str(ctx.tmp / 'out'))
  assert len(result['written']) == 3 and not result['failed']
  assert sorted(os.listdir(ctx.tmp / 'out')) == sorted(
      f'{s}_{k}.png' for s in ('a_png', 'a_jpg', 'b') for k in ('prob', 'mask', 'overlay'))


def test_one_pixel_image_is_served_as_predict_serves_it(ctx):
  """One rule for the smallest image (ds2f_jax.imaging.check_image_size) in both paths."""
  image = np.full((1, 1, 3), 200, np.uint8)
  Image.fromarray(image).save(ctx.tmp / 'dot.png')
  result = predict.predict(ctx.cfg, ctx.workdir, str(ctx.tmp / 'dot.png'), str(ctx.tmp / 'o'))
  assert result['written'] == [str(ctx.tmp / 'dot.png')]
  served = serving.Predictor.load(ctx.export).predict(image)
  assert served.mask.shape == (1, 1) and served.probs.shape == (1, 1, 2)
  prob16 = np.asarray(Image.open(ctx.tmp / 'o' / 'dot_prob.png')).astype(np.int64)
  assert abs(int(prob16[0, 0]) - round(float(served.probs[0, 0, 1]) * 65535)) <= 1


def test_docs_table_lists_every_case():
  with open(DOC, encoding='utf-8') as f:
    doc = f.read()
  assert SECTION in doc
  section = doc.split(SECTION, 1)[1].split('\n## ', 1)[0]
  documented = re.findall(r'^\| [^|]+ \| `([a-z0-9_]+)` \|', section, flags=re.M)
  assert sorted(documented) == sorted(c[0] for c in CASES)
