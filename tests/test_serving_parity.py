"""The exported Predictor and `--mode predict` give the same masks and probabilities.

For each variant whose network input size differs (ds2f: LR in, HR out;
seg_only: LR in and out; seg_hr: HR in and out), one checkpoint (initialised,
then perturbed so the outputs are far from 0.5; no train step is compiled) is
exported and predicted at awkward image sizes: very wide, very tall, odd, one
pixel larger than the network input, and a single pixel. Both paths go
through `ds2f_jax.imaging`, so masks agree exactly and probabilities to the
16-bit PNG's rounding.
"""

import os

import jax
import numpy as np
import pytest
from PIL import Image

from ds2f_jax import checkpointing, export, imaging, inference, predict, serving, sharding, train
from tests.test_export import _perturbed

pytestmark = pytest.mark.slow  # Trains or compiles many programs: the full suite only.

VARIANTS = ('ds2f', 'seg_only', 'seg_hr')
# (height, width): 1751x301 and 83x997 (width x height) of the issue, odd sides, one
# pixel more than the LR (32) and HR (64) inputs, one pixel, and sides where PyTorch's
# float32 nearest rule differs from the exact one (32 or 64 -> 122 and 82): serving once
# used the exact rule there while --mode predict used PyTorch's.
SIZES = {'wide': (301, 1751), 'tall': (997, 83), 'odd': (45, 71), 'lr_plus_1': (33, 33),
         'hr_plus_1': (65, 65), 'one_pixel': (1, 1), 'float32_drift': (122, 82)}


def _centred(cfg, state, images):
  """The state with its output bias moved so that half the pixels of `images` are class 1."""
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  lr = np.stack([imaging.bicubic_normalised(im, imaging.input_size(cfg)) for im in images])
  probs = np.asarray(jax.jit(export.predict_fn(inference.create_model(cfg)))(variables, lr))
  shift = np.median(np.log(probs[..., 1]) - np.log(probs[..., 0]))
  bias = np.asarray(state.params['out_conv']['bias']).copy()
  bias[1] -= shift
  params = dict(state.params, out_conv=dict(state.params['out_conv'], bias=bias))
  return state.replace(params=params)


@pytest.fixture(scope='module')
def images(tmp_path_factory):
  folder = tmp_path_factory.mktemp('parity_images')
  rng = np.random.default_rng(0)
  out = {}
  for name, (h, w) in SIZES.items():
    # Smooth images: vessel-like structure rather than noise, so masks have both classes.
    y, x = np.mgrid[0:h, 0:w]
    base = 128 + 100 * np.sin(x / 7.0 + rng.uniform(0, 6)) * np.cos(y / 11.0)
    image = np.clip(base[..., None] + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(image).save(folder / f'{name}.png')
    out[name] = image
  return str(folder), out


@pytest.fixture(scope='module', params=VARIANTS)
def variant_run(request, tmp_path_factory, synthetic_data_dir, images):
  """One variant: checkpoint, export, --mode predict's files and the Predictor's results."""
  from configs import synthetic
  cfg = synthetic.get_config('tiny')
  cfg.data.data_dir = synthetic_data_dir
  cfg.model.variant = request.param
  workdir = str(tmp_path_factory.mktemp(f'parity_{request.param}'))
  mesh = sharding.create_mesh(jax.devices()[:1])
  model, tx = train.create_model(cfg), train.create_optimizer(cfg)
  state = _perturbed(train.init_state(cfg, model, tx, mesh), 1)
  state = _centred(cfg, state, images[1].values())
  mngr = checkpointing.create_manager(workdir, 1)
  checkpointing.save(mngr, 1, state)
  mngr.wait_until_finished()
  mngr.close()
  cfg.export.checkpoint = cfg.eval.checkpoint = 'latest'
  predictor = serving.Predictor.load(export.export(cfg, workdir))
  folder, arrays = images
  out = os.path.join(workdir, 'predicted')
  result = predict.predict(cfg, workdir, folder, out)
  assert len(result['written']) == len(SIZES) and not result['failed']
  served = dict(zip(arrays, predictor.predict_batch(list(arrays.values()), batch_size=8)))
  return cfg, predictor, out, arrays, served


def test_export_records_the_variants_input_size(variant_run):
  cfg, predictor, _, _, _ = variant_run
  want = {'ds2f': (32, 32), 'seg_only': (32, 32), 'seg_hr': (64, 64)}[cfg.model.variant]
  assert predictor.lr_size == want == imaging.input_size(cfg)
  out = {'ds2f': (64, 64), 'seg_only': (32, 32), 'seg_hr': (64, 64)}[cfg.model.variant]
  assert tuple(predictor.info['output']['size']) == out
  lr = np.zeros((1, *want, 3), np.float32)
  assert predictor.predict_lr(lr).shape == (1, *out, 2)


@pytest.mark.parametrize('name', list(SIZES))
def test_predictor_equals_predict_mode(variant_run, name):
  cfg, _, out, arrays, served = variant_run
  image, result = arrays[name], served[name]
  assert result.mask.shape == image.shape[:2] == result.probs.shape[:2]
  mask = np.asarray(Image.open(os.path.join(out, f'{name}_mask.png')))
  prob16 = np.asarray(Image.open(os.path.join(out, f'{name}_prob.png'))).astype(np.int64)
  np.testing.assert_array_equal(mask, result.mask.astype(np.uint8) * 255,
                                err_msg=f'{cfg.model.variant} {name}')
  levels = np.rint(result.probs[..., 1].astype(np.float64) * 65535).astype(np.int64)
  assert np.abs(prob16 - levels).max() <= 1, (cfg.model.variant, name)
  if name != 'one_pixel':  # Both classes occur: the comparison is not trivially all-0.
    assert 0.05 < result.mask.mean() < 0.95, (cfg.model.variant, name, result.mask.mean())
