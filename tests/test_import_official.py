"""`--mode import` of official DS2F checkpoints and `config.init_from`.

The end-to-end test writes a .pth exactly as the official training script saves
one (width 64, DDP `module.` prefixes, random weights and BN statistics), imports
it, exports it, and checks the exported function's probabilities against the
official model's eval-mode softmax. The error cases run in-process at width 8.
Skips when torch or the official code (<repo>/../shared/reference) is absent.
"""

import collections
import collections.abc
import json
import os
import subprocess
import sys

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

torch = pytest.importorskip('torch')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REF = os.path.join(ROOT, '..', 'shared', 'reference', 'imed_vision')
if not os.path.isdir(os.path.join(REF, 'imed_vision')):
  pytest.skip(f'the official code is not at {REF}', allow_module_level=True)

from configs import default  # pylint: disable=g-import-not-at-top
from ds2f_jax import checkpointing, import_official, init_from, serving, sharding, train
from tests import scenario as rel  # pylint: disable=g-import-not-at-top


def official_unet(width, seed=0):
  collections.Iterable = collections.abc.Iterable
  if REF not in sys.path:
    sys.path.insert(0, REF)
  from imed_vision.models.segmentation.unet import Unet  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  model = Unet(3, 2, super_reso=True, upscale_rate=2, sr_seg_fusion=True, sr_layer=5,
               before=True, base_ch=width)
  gen = torch.Generator().manual_seed(seed + 1)
  for m in model.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      c = m.num_features
      m.weight.data = 0.5 + torch.rand(c, generator=gen)
      m.bias.data = 0.2 * torch.randn(c, generator=gen)
      m.running_mean.copy_(0.2 * torch.randn(c, generator=gen))
      m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
  return model


def save_as_official_script(model, path):
  """{'model', 'lr_sche', 'optimizer'} with DDP prefixes, as the training script saves it."""
  from imed_vision.comm.scheduler.poly import PolyLRScheduler  # pylint: disable=g-import-not-at-top
  opt = torch.optim.SGD([{'params': model.parameters(), 'initial_lr': 0.01}], lr=0.01,
                        momentum=0.9, nesterov=True, weight_decay=1e-4)
  sche = PolyLRScheduler(opt, 10, batch_size=2, epochs=3)
  torch.save({'epoch': 3, 'best_iou': 0.5,
              'model': {f'module.{k}': v for k, v in model.state_dict().items()},
              'lr_sche': sche.state_dict(), 'optimizer': opt.state_dict()}, path)


@pytest.mark.slow
def test_official_pth_import_export_matches_official_softmax(tmp_path):
  theirs = official_unet(64)
  pth = str(tmp_path / 'unet_best.pth')
  save_as_official_script(theirs, pth)
  workdir = str(tmp_path / 'w')
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  common = [sys.executable, os.path.join(ROOT, 'main.py'), '--config',
            os.path.join(ROOT, 'configs', 'default.py'), '--workdir', workdir,
            '--config.data.hr_size=(64,64)']
  for extra in (['--mode', 'import', '--input', pth], ['--mode', 'export']):
    proc = subprocess.run(common + extra, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['model']['width'] == 64
  lr = np.random.default_rng(0).uniform(-1, 1, (1, 40, 56, 3)).astype(np.float32)  # Non-square.
  probs = serving.Predictor.load(os.path.join(workdir, 'export')).predict_lr(lr)
  theirs.eval()
  with torch.no_grad():
    want = torch.softmax(theirs(torch.from_numpy(lr).permute(0, 3, 1, 2)), 1)
  want = want.permute(0, 2, 3, 1).numpy()
  assert probs.shape == want.shape == (1, 80, 112, 2)
  print(f'PARITY exported probabilities: {np.abs(probs - want).max():.1e}')
  np.testing.assert_allclose(probs, want, atol=1e-4, rtol=0)


def _config(width=8):
  cfg = default.get_config()
  cfg.model.width = width
  cfg.data.hr_size = (32, 32)
  return cfg


@pytest.fixture(scope='module')
def small_sd():
  return {k: v.numpy() for k, v in official_unet(8).state_dict().items()}


def _save(sd, path, wrap=True):
  sd = {k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}
  torch.save({'model': sd} if wrap else sd, path)
  return str(path)


@pytest.mark.parametrize('edit, message', [
    (lambda sd: sd.pop('up9.conv.conv2.conv.weight'),
     r'missing key up9.conv.conv2.conv.weight \(8, 8, 3, 3\)'),
    (lambda sd: sd.update({'extra.weight': np.zeros((2, 3))}),
     r'unexpected key extra.weight \(2, 3\)'),
    (lambda sd: sd.pop('sr_up6.conv.conv1.conv.weight'),  # Partial training-only part.
     r'missing key sr_up6.conv.conv1.conv.weight'),
])
def test_bad_checkpoints_name_the_key_and_write_nothing(tmp_path, small_sd, edit, message):
  sd = dict(small_sd)
  edit(sd)
  workdir = tmp_path / 'w'
  with pytest.raises(ValueError, match=message):
    import_official.import_checkpoint(_config(), str(workdir), _save(sd, tmp_path / 'x.pth'))
  assert not workdir.exists()


def test_wrong_model_and_truncated_file_are_refused(tmp_path, small_sd):
  path = _save(small_sd, tmp_path / 'x.pth')
  workdir = tmp_path / 'w'
  with pytest.raises(ValueError, match=r'down1.conv.conv1.conv.weight: shape \(8, 3, 3, 3\) in '
                     r'the checkpoint, \(16, 3, 3, 3\) in this config'):
    import_official.import_checkpoint(_config(16), str(workdir), path)
  cut = tmp_path / 'cut.pth'
  cut.write_bytes(open(path, 'rb').read()[:5000])
  with pytest.raises(ValueError, match='is not a readable PyTorch checkpoint'):
    import_official.import_checkpoint(_config(), str(workdir), str(cut))
  assert not workdir.exists()


def test_without_torch_one_line_says_what_to_install(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, 'torch', None)
  with pytest.raises(ValueError, match='pip install torch'):
    import_official.read_state_dict(str(tmp_path / 'x.pth'))


def test_inference_only_checkpoint_imports_and_init_from_reuses_it(tmp_path, small_sd):
  """A bare state_dict of the inference path: SR stream and SFEM from init. Then a
  new run's state from init_from carries exactly the imported tensors."""
  training_only = ('sr_up', 'sr_module', 'sr_seg_fusion_module')
  sd = {k: v for k, v in small_sd.items() if not k.startswith(training_only)}
  workdir = str(tmp_path / 'w')
  cfg = _config()
  import_official.import_checkpoint(cfg, workdir, _save(sd, tmp_path / 'x.pth', wrap=False))
  with pytest.raises(ValueError, match='already holds checkpoints'):
    import_official.import_checkpoint(cfg, workdir, _save(sd, tmp_path / 'x.pth'))

  mesh = sharding.create_mesh()
  model, tx = train.create_model(cfg), train.create_optimizer(cfg)
  fresh = train.init_state(cfg, model, tx, mesh)
  cfg.init_from = workdir
  state = init_from.initialize(cfg, fresh)
  got = import_official.name_map('ds2f_unet', {'params': state.params})
  flat = {tuple(k.key for k in p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path({'params': state.params})[0]}
  init = {tuple(k.key for k in p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path({'params': fresh.params})[0]}
  for keys, key in got.items():
    if key in sd:
      np.testing.assert_array_equal(import_official.to_official_layout(keys, flat[keys]), sd[key])
    else:
      assert import_official.is_training_only(keys)
      np.testing.assert_array_equal(flat[keys], init[keys])
  stats = import_official.name_map('ds2f_unet', {'batch_stats': state.batch_stats})
  k = ('batch_stats', 'encoder', 'down5', 'ConvBNAct_1', 'BatchNorm_0', 'var')
  np.testing.assert_array_equal(np.asarray(state.batch_stats['encoder']['down5']['ConvBNAct_1']
                                           ['BatchNorm_0']['var']), sd[stats[k]])

  # An export folder holds {'params', 'batch_stats'} of the inference path.
  export_dir = tmp_path / 'export'
  export_dir.mkdir()
  (export_dir / serving.INFO_FILE).write_text('{}')
  inference = {'params': {k: v for k, v in jax.device_get(state.params).items()
                          if k not in ('sr_decoder', 'sr_head', 'sfem')},
               'batch_stats': {k: v for k, v in jax.device_get(state.batch_stats).items()
                               if k not in ('sr_decoder', 'sfem')}}
  (export_dir / serving.PARAMS_FILE).write_bytes(flax.serialization.msgpack_serialize(inference))
  cfg.init_from = str(export_dir)
  again = init_from.initialize(cfg, fresh)
  for a, b in zip(jax.tree_util.tree_leaves(again.params['encoder']),
                  jax.tree_util.tree_leaves(state.params['encoder'])):
    np.testing.assert_array_equal(a, b)

  wider = _config(16)
  wider.init_from = workdir
  state16 = train.init_state(wider, train.create_model(wider), tx, mesh)
  with pytest.raises(ValueError, match=r'down1/ConvBNAct_0/BatchNorm_0/mean: shape \(8,\) there, '
                     r'\(16,\) in this config'):
    init_from.initialize(wider, state16)
  wider.init_from = str(tmp_path / 'nowhere')
  with pytest.raises(FileNotFoundError, match='neither a workdir'):
    init_from.initialize(wider, fresh)


@pytest.mark.slow
def test_train_fine_tunes_an_import_and_init_from_starts_a_new_run(tmp_path, synthetic_data_dir):
  """--mode train on an imported workdir starts at step 0 from the official weights,
  and a new workdir with init_from pointing at the import takes the very same steps
  (the shared 6-step scenario, whose programs the suite compiles once)."""
  cfg = rel.scenario_config(synthetic_data_dir)
  cfg.keep_checkpoints = 4  # The import (step 0) stays beside 2, 4 and 6.
  theirs = official_unet(cfg.model.width)
  sd = {k: v.numpy() for k, v in theirs.state_dict().items()}
  imported = str(tmp_path / 'imported')
  import_official.import_checkpoint(cfg, imported, _save(sd, tmp_path / 'x.pth'))
  fresh = str(tmp_path / 'fresh')
  cfg.init_from = imported  # Its newest checkpoint: step 0, the import.
  rel.run_in_process(cfg, fresh)
  cfg.init_from = ''
  rel.run_in_process(cfg, imported)

  def kernel(workdir, step):
    mngr = checkpointing.create_manager(workdir, 4, read_only=True)
    assert list(mngr.all_steps()) == ([2, 4, 6] if workdir == fresh else [0, 2, 4, 6])
    state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    mngr.close()
    return np.asarray(state['state']['params']['encoder']['down1']['ConvBNAct_0']['Conv_0']
                      ['kernel'])

  official_k = import_official.from_official_layout(('kernel',),
                                                    sd['down1.conv.conv1.conv.weight'])
  np.testing.assert_array_equal(kernel(imported, 0), official_k)
  trained = kernel(imported, 2)
  assert np.abs(trained - official_k).max() > 0  # Steps were taken from the import...
  # ... and a new run from it takes the same steps (same data, same fresh optimiser).
  np.testing.assert_allclose(kernel(fresh, 2), trained, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(kernel(fresh, 6), kernel(imported, 6), rtol=1e-6, atol=1e-7)
