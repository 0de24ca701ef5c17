"""Export -> serving: the served model is the trained one, and nothing but it.

The checkpoints are made without training (initialised, then perturbed so that
BatchNorm statistics and weights are far from their defaults): the export path
is what is under test, and a train-step compile would cost ~25 s.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from ds2f_jax import checkpointing, export, inference, msgpack_params, serving, sharding, train
from ds2f_jax.models import layers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SR_ONLY = ('sr_decoder', 'sr_head', 'sfem')


def _perturbed(state, seed):
  rng = np.random.default_rng(seed)

  def params(x):
    x = np.asarray(x)
    return (x + 0.1 * rng.standard_normal(x.shape)).astype(x.dtype)

  def stats(path, x):
    x = np.asarray(x)
    if path[-1].key == 'var':
      return rng.uniform(0.5, 1.5, x.shape).astype(x.dtype)
    return (0.2 * rng.standard_normal(x.shape)).astype(x.dtype)

  return state.replace(params=jax.tree_util.tree_map(params, state.params),
                       batch_stats=jax.tree_util.tree_map_with_path(stats, state.batch_stats))


@pytest.fixture(scope='module')
def run(tmp_path_factory, synthetic_data_dir):
  """Checkpoints at steps 3 and 5 (different weights), step 3 exported."""
  from configs import synthetic
  cfg = synthetic.get_config('tiny')
  cfg.data.data_dir = synthetic_data_dir
  workdir = str(tmp_path_factory.mktemp('export_run'))
  mesh = sharding.create_mesh(jax.devices()[:1])
  model, tx = train.create_model(cfg), train.create_optimizer(cfg)
  state0 = train.init_state(cfg, model, tx, mesh)
  states = {3: _perturbed(state0, 3), 5: _perturbed(state0, 5)}
  mngr = checkpointing.create_manager(workdir, 3)
  for step, state in states.items():
    checkpointing.save(mngr, step, state)
  mngr.wait_until_finished()
  mngr.close()
  cfg.export.checkpoint = '3'
  export_dir = export.export(cfg, workdir)
  state = jax.device_get(states[3])
  return types.SimpleNamespace(
      cfg=cfg, workdir=workdir, export_dir=export_dir, model=inference.create_model(cfg),
      variables={'params': state.params, 'batch_stats': state.batch_stats},
      predictor=serving.Predictor.load(export_dir))


def _paths(tree):
  return {'/'.join(str(k.key) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_served_outputs_equal_the_in_memory_model(run):
  reference = jax.jit(export.predict_fn(run.model))  # Full train-graph variables.
  rng = np.random.default_rng(0)
  for h, w in ((32, 32), (17, 29)):  # The trained LR size, and odd sides (ceil pooling).
    x = rng.uniform(-1, 1, (2, h, w, 3)).astype(np.float32)
    want = np.asarray(reference(run.variables, x))
    assert want.shape == (2, 2 * h, 2 * w, 2)
    for b in (1, 2):
      got = run.predictor.predict_lr(x[:b])
      assert got.shape == (b, 2 * h, 2 * w, 2) and got.dtype == np.float32
      np.testing.assert_allclose(got, want[:b], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(want.sum(-1), 1, atol=1e-5)

  # From images of any size: bicubic to the LR size, model, nearest back (PyTorch legacy).
  images = [rng.integers(0, 256, (80, 96, 3), np.uint8),
            rng.integers(0, 256, (45, 70, 3), np.uint8)]
  results = run.predictor.predict_batch(images, batch_size=2)
  from ds2f_jax import augment, imaging
  lr = np.stack([imaging.normalise(augment.resize_bicubic(im, (32, 32))) for im in images])
  hr = np.asarray(reference(run.variables, lr))
  for im, res, probs in zip(images, results, hr):
    height, width = im.shape[:2]
    rows = np.floor(np.arange(height) * (64 / height)).astype(int)
    cols = np.floor(np.arange(width) * (64 / width)).astype(int)
    want = probs[rows][:, cols]
    assert res.probs.shape == (height, width, 2) and res.mask.dtype == np.uint8
    np.testing.assert_allclose(res.probs, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(res.mask, np.argmax(want, -1))
  one = run.predictor.predict(images[1])
  np.testing.assert_allclose(one.probs, results[1].probs, rtol=1e-5, atol=1e-6)


def test_export_holds_the_inference_path_only(run):
  import flax
  import orbax.checkpoint as ocp
  with open(os.path.join(run.export_dir, serving.PARAMS_FILE), 'rb') as f:
    blob = f.read()
  ours, theirs = msgpack_params.loads(blob), flax.serialization.msgpack_restore(blob)
  ckpt = ocp.StandardCheckpointer().restore(os.path.join(run.export_dir, serving.PARAMS_CHECKPOINT))
  assert set(ours) == {'params', 'batch_stats'}
  full = _paths(run.variables)
  kept = {k for k in full if not any(s in k.split('/') for s in SR_ONLY)}
  assert len(kept) < len(full)  # The train graph has SR / SFEM parameters to drop.
  for tree in (ours, theirs, ckpt):
    exported = _paths(tree)
    assert set(exported) == kept
    for k, v in exported.items():
      np.testing.assert_array_equal(np.asarray(v), np.asarray(full[k]), err_msg=k)
  names = ' '.join(os.path.relpath(os.path.join(d, f), run.export_dir)
                   for d, _, files in os.walk(run.export_dir) for f in files)
  assert not any(s in names for s in SR_ONLY)


def test_export_info(run):
  with open(os.path.join(run.export_dir, serving.INFO_FILE)) as f:
    info = json.load(f)
  assert info['checkpoint'] == {'step': 3, 'selected_by': '3'}
  assert info['class_names'] == ['background', 'vessel']
  assert info['model']['upscale'] == 2 and info['model']['num_classes'] == 2
  assert info['input']['lr_size'] == [32, 32] and info['output']['hr_size'] == [64, 64]
  assert info['input']['min_lr_side'] == 16
  assert info['input']['normalisation'].startswith('x / 255 * 2 - 1')
  assert info['signature']['platforms'] == ['cpu', 'cuda', 'tpu']
  assert info['versions']['jax'] == jax.__version__
  on_disk = {os.path.relpath(os.path.join(d, f), run.export_dir)
             for d, _, files in os.walk(run.export_dir) for f in files}
  assert set(info['files']) == on_disk - {serving.INFO_FILE}
  assert {serving.PARAMS_FILE, serving.EXPORTED_FILE} <= set(info['files'])
  for rel, digest in info['files'].items():
    assert serving.sha256_file(os.path.join(run.export_dir, rel)) == digest
  assert not [p for p in os.listdir(run.workdir) if p.startswith('export.')]  # No leftovers.


_FRESH = textwrap.dedent('''
    import runpy, sys
    sys.argv = ['serving'] + sys.argv[1:]
    try:
      runpy.run_module('ds2f_jax.serving', run_name='__main__')
    except SystemExit as e:
      assert not e.code, e.code
    heavy = {'flax', 'optax', 'orbax', 'tensorflow', 'tensorflow_datasets', 'grain', 'clu',
             'ml_collections', 'msgpack'}
    loaded = sorted(m for m in sys.modules if m.split('.')[0] in heavy or m == 'ds2f_jax.train')
    print('HEAVY', loaded)
''')


def test_fresh_process_serves_without_training_code(run, tmp_path):
  image = np.random.default_rng(1).integers(0, 256, (80, 96, 3), np.uint8)
  Image.fromarray(image).save(tmp_path / 'eye.png')
  out = tmp_path / 'out'
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_COMPILATION_CACHE_DIR=os.environ.get(
      'DS2F_TEST_XLA_CACHE', ''), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0.5')
  proc = subprocess.run([sys.executable, '-c', _FRESH, run.export_dir, str(tmp_path / 'eye.png'),
                         '--output', str(out), '--save-probs'],
                        capture_output=True, text=True, timeout=300, cwd=str(tmp_path), env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'HEAVY []' in proc.stdout, proc.stdout
  assert f'eye.png -> {out}/eye_mask.png (background' in proc.stdout
  want = run.predictor.predict(image)
  np.testing.assert_array_equal(np.asarray(Image.open(out / 'eye_mask.png')), want.mask)
  np.testing.assert_allclose(np.load(out / 'eye_probs.npy'), want.probs, rtol=1e-5, atol=1e-6)
  assert np.asarray(Image.open(out / 'eye_overlay.png')).shape == (80, 96, 3)


def _main(*args):
  return subprocess.run([sys.executable, os.path.join(ROOT, 'main.py'), *args],
                        capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_export_without_checkpoint_is_one_line(run, tmp_path):
  proc = _main('--mode', 'export', '--config', 'configs/synthetic.py:tiny', '--workdir',
               str(tmp_path / 'empty'), '--config.data.data_dir', str(tmp_path / 'd'))
  assert proc.returncode == 2
  lines = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert lines == [f'error: workdir {tmp_path / "empty"} does not exist: train first '
                   '(--mode train)'], proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr
  cfg = run.cfg.copy_and_resolve_references()
  cfg.export.checkpoint = '7'
  with pytest.raises(FileNotFoundError, match=r'checkpoint step 7 not in .*available: \[3, 5\]'):
    export.export(cfg, run.workdir)
  cfg.export.checkpoint = 'newest'
  with pytest.raises(ValueError, match="export.checkpoint='newest': use best, latest or a step"):
    export.export(cfg, run.workdir)


@pytest.mark.parametrize('name', [serving.PARAMS_FILE, serving.EXPORTED_FILE])
def test_tampered_file_is_named(run, tmp_path, name, capsys):
  copy = str(tmp_path / 'export')
  shutil.copytree(run.export_dir, copy)
  path = os.path.join(copy, name)
  with open(path, 'r+b') as f:
    f.seek(100)
    byte = f.read(1)
    f.seek(100)
    f.write(bytes([byte[0] ^ 1]))
  with pytest.raises(ValueError, match=f'{path}: sha256 mismatch'):
    serving.Predictor.load(copy)
  assert serving.main([copy, 'x.png', '--output', str(tmp_path / 'o')]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith(f'error: {path}: sha256 mismatch'), err
  os.remove(path)
  with pytest.raises(FileNotFoundError, match=f'{path} is missing'):
    serving.Predictor.load(copy)


@pytest.mark.parametrize('image, kwargs, message', [
    (np.zeros((0, 40, 3), np.uint8), {}, r'image of shape \(0, 40, 3\) is empty: each side '
     'must be >= 1 pixel'),
    (np.zeros((40, 40), np.uint8), {}, r'image has 1 channel \(shape \(40, 40\)\)'),
    (np.zeros((40, 40, 1), np.uint8), {}, 'image has 1 channel'),
    (np.zeros((40, 40, 4), np.uint8), {}, r'image has 4 channels .* drop the alpha'),
    (np.zeros((40, 40, 2), np.uint8), {}, r'expected an \(H, W, 3\) RGB image'),
    (np.zeros((40, 40, 3), np.float32), {}, 'expected uint8 RGB values'),
    (np.zeros((40, 40, 3), np.uint8), {'lr_size': (8, 20)}, r'LR input \(8, 20\) is too small'),
])
def test_bad_images_are_one_line(run, image, kwargs, message):
  with pytest.raises(ValueError, match=message) as e:
    run.predictor.predict(image, **kwargs)
  assert '\n' not in str(e.value)
  with pytest.raises(ValueError, match='image 1'):
    run.predictor.predict_batch([np.zeros((40, 40, 3), np.uint8), np.zeros((40, 40, 4), np.uint8)])
  with pytest.raises(ValueError, match=r'LR input \(15, 32\) is too small'):
    run.predictor.predict_lr(np.zeros((1, 15, 32, 3), np.float32))


def test_image_files_and_cli_errors(tmp_path, run, capsys):
  grey = np.arange(40 * 48, dtype=np.uint32).reshape(40, 48).astype(np.uint8)
  Image.fromarray(grey).save(tmp_path / 'grey.png')
  rgb = serving.load_image(str(tmp_path / 'grey.png'))  # Files are converted to RGB.
  assert rgb.shape == (40, 48, 3) and (rgb == grey[..., None]).all()
  (tmp_path / 'bad.png').write_bytes(b'not a png')
  with pytest.raises(ValueError, match=f'{tmp_path}/bad.png: not an image Pillow can read'):
    serving.load_image(str(tmp_path / 'bad.png'))
  assert serving.main([run.export_dir, str(tmp_path / 'missing.png'), '--output',
                       str(tmp_path / 'o')]) == 2
  assert capsys.readouterr().err == f'error: image {tmp_path}/missing.png not found\n'
  with pytest.raises(FileNotFoundError, match='is not an export directory'):
    serving.Predictor.load(str(tmp_path))


def test_msgpack_reader_matches_flax():
  from flax import serialization
  rng = np.random.default_rng(0)
  tree = {'a': {'k': rng.normal(size=(3, 4)).astype(np.float32), 'i': np.arange(5) - 2},
          'bf16': np.asarray(rng.normal(size=(7,)), jnp.bfloat16), 'scalar': np.float32(2.5),
          'empty': np.zeros((0, 3), np.uint8), 'big': rng.normal(size=(300,)).astype(np.float32),
          'n': 300, 'neg': -5, 'x': 1.5, 's': 'text', 'c': 1 + 2j, 'none': None}
  old = serialization.MAX_CHUNK_SIZE
  serialization.MAX_CHUNK_SIZE = 256  # Exercise flax's chunked form of large arrays.
  try:
    blob = serialization.msgpack_serialize(tree)
  finally:
    serialization.MAX_CHUNK_SIZE = old
  got, want = msgpack_params.loads(blob), serialization.msgpack_restore(blob)
  assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
  for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    assert np.asarray(a).dtype == np.asarray(b).dtype
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(ValueError, match='truncated msgpack data'):
    msgpack_params.loads(blob[:-3])


@pytest.mark.parametrize('align_corners', [True, False])
def test_traced_interpolation_matrix_equals_numpy(align_corners):
  traced = jax.jit(layers._interp_matrix_traced, static_argnums=(0, 1, 2, 3))
  for n_in, n_out in ((2, 4), (9, 17), (17, 9), (5, 5), (1, 3), (16, 32)):
    want = layers._interp_matrix(n_in, n_out, align_corners)
    got = np.asarray(traced(n_in, n_out, align_corners, jnp.float32))
    np.testing.assert_allclose(got, want, atol=2e-6, err_msg=str((n_in, n_out)))
