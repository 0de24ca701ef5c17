"""float64 parity with the authors' PyTorch code (GitHub Qsingle/imed_vision, 91776aa).

The official DS2F-UNet is built as its training script builds it (super_reso,
sr_seg_fusion, before=True, sr_layer=5), width 64, LR 32x32 -> HR 64x64, batch 2.
Every weight and BN buffer (BN affine and running statistics random, far from
their defaults) is ported into ours through `ds2f_jax.import_official`, the
mapping `--mode import` uses; then parameter counts per module, the eval output,
the four train outputs, each loss term (official SSIM from pytorch-msssim,
official RMI), every gradient, BN running statistics after a train step, and two
SGD-Nesterov steps with coupled weight decay are compared. DS2F-DeepLabV3+
(ResNet-50, OS8) is compared where its structure is the official one: parameter
counts of every official module but the SFEM (official CAGL, ours MSCG), and the
eval output (the inference path).

Relative difference of a quantity = max |ours - official| / max |official|.
Our losses run in float32 by design (no float64 on the hot path), so those
terms and the gradients flowing back from them carry float32 rounding, ~1e-7.

Skips when torch, pytorch-msssim or the reference folder (<repo>/../shared/
reference/imed_vision) is absent.
"""

import collections
import collections.abc
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

torch = pytest.importorskip('torch')
pytest.importorskip('pytorch_msssim')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REF = os.path.join(ROOT, '..', 'shared', 'reference', 'imed_vision')
if not os.path.isdir(os.path.join(REF, 'imed_vision')):
  pytest.skip(f'the official code is not at {REF}', allow_module_level=True)

from configs import default  # pylint: disable=g-import-not-at-top
from ds2f_jax import import_official, losses, train
from ds2f_jax.models import layers, registry

pytestmark = pytest.mark.slow  # Trains or compiles many programs: the full suite only.

TOL = 1e-6
LR_SIZE, R, BATCH, WIDTH = (32, 32), 2, 2, 64
# Official top-level module -> our subtree.
UNET_MODULES = {
    **{f'down{i}': ('encoder', f'down{i}') for i in range(1, 6)},
    **{f'up{i}': ('seg_decoder', f'up{i}') for i in range(6, 10)},
    **{f'sr_up{i}': ('sr_decoder', f'up{i}') for i in range(6, 10)},
    'out_conv': ('out_conv',), 'sr_module': ('sr_head',), 'sr_seg_fusion_module': ('sfem',)}
DEEPLAB_MODULES = {'backbone': ('encoder', 'backbone'), 'aspp': ('encoder', 'aspp'),
                   'decoder_seg': ('seg_decoder',), 'decoder_sr': ('sr_decoder',),
                   'out_conv': ('out_conv',), 'sr': ('sr_head',)}


def official():
  """The official package (its layernorm module still uses collections.Iterable)."""
  collections.Iterable = collections.abc.Iterable
  if REF not in sys.path:
    sys.path.insert(0, REF)
  import imed_vision  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  return imed_vision


def x64():
  return jax.enable_x64(True)


def randomize_bn(model, seed):
  """BN affine and running statistics set far from their defaults."""
  gen = torch.Generator().manual_seed(seed)
  for m in model.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      c, kw = m.num_features, dict(generator=gen, dtype=torch.float64)
      m.weight.data = 0.5 + torch.rand(c, **kw)
      m.bias.data = 0.2 * torch.randn(c, **kw)
      m.running_mean.copy_(0.2 * torch.randn(c, **kw))
      m.running_var.copy_(0.5 + torch.rand(c, **kw))


def state_dict64(model):
  return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()
          if not k.endswith('num_batches_tracked')}


def zeros_like_variables(model, x):
  """float64 zeros shaped like the model's variables: the importer's target, which
  it fills with the official weights and BN buffers."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=True))
  return jax.tree_util.tree_map(lambda a: np.zeros(a.shape, np.float64), shapes)


def official_tree(model_name, tree):
  """Our variables/gradients -> {official key: array in the official layout}."""
  names = import_official.name_map(model_name, tree)
  flat = {tuple(k.key for k in p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
  return {names[k]: import_official.to_official_layout(k, flat[k]) for k in names}


def rel(ours, theirs) -> float:
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
  return float(np.max(np.abs(ours - theirs)) / max(np.max(np.abs(theirs)), 1e-300))


def nchw(a):
  return np.transpose(np.asarray(a), (0, 3, 1, 2))


def count(tree, path):
  for k in path:
    tree = tree[k]
  return layers.count_params(tree)


def _unet_config():
  cfg = default.get_config()
  cfg.model.width = WIDTH
  cfg.model.upscale = R
  cfg.optim.poly_power = 0.0  # Constant lr for the two steps (official: steps 0 and 1 at lr0).
  return cfg


@pytest.fixture(scope='module')
def unet():
  """Everything compared for DS2F-UNet, computed once: {quantity: (ours, official)}.

  Each step's outputs, losses and gradients are ours at the official model's
  current parameters (ported in), so that a step compares the computation, not
  the round-off carried over from the previous step. The optimiser is compared
  on the official gradients; the free-running two steps (ours from our own
  gradients) are reported too.
  """
  official()
  from imed_vision.loss import RMILoss, SSIMLoss  # pylint: disable=g-import-not-at-top
  from imed_vision.models.segmentation.unet import Unet  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  theirs = Unet(3, 2, super_reso=True, upscale_rate=R, sr_seg_fusion=True, sr_layer=5,
                before=True, base_ch=WIDTH).double()
  randomize_bn(theirs, 1)
  rng = np.random.default_rng(0)
  hr_size = (LR_SIZE[0] * R, LR_SIZE[1] * R)
  x = rng.uniform(-1, 1, (BATCH, *LR_SIZE, 3))
  hr = rng.uniform(-1, 1, (BATCH, *hr_size, 3))
  mask = rng.integers(0, 2, (BATCH, *hr_size))
  xt, hrt = torch.from_numpy(nchw(x).copy()), torch.from_numpy(nchw(hr).copy())
  mt = torch.from_numpy(mask)

  cfg = _unet_config()
  res = {}
  with x64():
    model = registry.create_model(cfg.model, dtype='float64')
    target = zeros_like_variables(model, jnp.zeros((1, *LR_SIZE, 3)))
    variables, _ = import_official.map_state_dict('ds2f_unet', state_dict64(theirs), target)
    res['counts'] = {name: (count(variables['params'], path),
                            sum(p.numel() for p in getattr(theirs, name).parameters()))
                     for name, path in UNET_MODULES.items()}
    res['num params'] = len(jax.tree_util.tree_leaves(variables['params']))

    theirs.eval()
    with torch.no_grad():
      res['eval out'] = (jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x),
                         nchw_t(theirs(xt)))

    def loss_fn(params, stats, x, hr, mask):
      outs, new = model.apply({'params': params, 'batch_stats': stats}, x, train=True,
                              mutable=['batch_stats'])
      loss, parts = losses.total_loss(outs, {'hr': hr, 'mask': mask}, cfg.loss, 2)
      return loss, (outs, parts, new['batch_stats'])

    grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    tx = train.create_optimizer(cfg)
    update = jax.jit(tx.update)
    apply = jax.jit(lambda p, u: jax.tree_util.tree_map(lambda a, b: a + b, p, u))
    names = import_official.name_map('ds2f_unet', {'params': variables['params']})
    fed, fed_opt = variables['params'], tx.init(variables['params'])
    free, free_opt, free_stats = fed, fed_opt, variables['batch_stats']

    theirs.train()
    opt = torch.optim.SGD(theirs.parameters(), lr=cfg.optim.learning_rate,
                          momentum=cfg.optim.momentum, nesterov=True,
                          weight_decay=cfg.optim.weight_decay)
    ce, mse = torch.nn.CrossEntropyLoss(), torch.nn.MSELoss()
    ssim, rmi = SSIMLoss(data_range=1), RMILoss(num_classes=2, rmi_pool_way=1)
    for step in (1, 2):
      cur, _ = import_official.map_state_dict('ds2f_unet', state_dict64(theirs), target)
      (loss, (outs, parts, stats)), grads = grad_fn(cur['params'], cur['batch_stats'], x, hr,
                                                    mask)
      opt.zero_grad()
      out, sr, fusion_seg, fusion_sr = theirs(xt)
      terms = {'ce': ce(out, mt), 'mse': mse(sr, hrt), 'ssim': ssim(fusion_sr, hrt),
               'rmi': rmi(fusion_seg, mt)}
      total = sum(terms.values())
      total.backward()
      tag = '' if step == 1 else ' at step 2'
      for name, o, t in zip(('out', 'sr', 'fusion_seg', 'fusion_sr'), outs,
                            (out, sr, fusion_seg, fusion_sr)):
        res[f'train {name}{tag}'] = (o, nchw_t(t))
      for name, t in terms.items():
        res[f'loss {name}{tag}'] = (parts[name], t.item())
      res[f'loss total{tag}'] = (loss, total.item())
      got = official_tree('ds2f_unet', {'params': grads})
      res[f'gradients{tag}'] = {k: (got[k], p.grad.numpy().copy())
                                for k, p in theirs.named_parameters()}
      if step == 1:
        got = official_tree('ds2f_unet', {'batch_stats': stats})
        res['BN running stats after 1 step'] = {k: (got[k], v) for k, v in
                                                state_dict64(theirs).items() if k in got}
      their_grads = {k: p.grad.numpy() for k, p in theirs.named_parameters()}
      fed_grads = traverse_util.unflatten_dict(
          {k[1:]: import_official.from_official_layout(k, their_grads[v])
           for k, v in names.items()})
      updates, fed_opt = update(fed_grads, fed_opt, fed)
      fed = apply(fed, updates)
      if step == 1:  # Free-running starts where the fed run does: the same gradients.
        free_grads, free_stats = grads, stats
      else:
        (_, (_, _, free_stats)), free_grads = grad_fn(free, free_stats, x, hr, mask)
      updates, free_opt = update(free_grads, free_opt, free)
      free = apply(free, updates)
      opt.step()
    their_params = {k: p.detach().numpy().copy() for k, p in theirs.named_parameters()}
    got = official_tree('ds2f_unet', {'params': fed})
    res['params after 2 SGD steps'] = {k: (got[k], v) for k, v in their_params.items()}
    got = official_tree('ds2f_unet', {'params': free})
    res['params after 2 SGD steps, free-running'] = {k: (got[k], v)
                                                     for k, v in their_params.items()}
  return res


def nchw_t(t):
  return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


def _max_rel(pairs) -> float:
  if not isinstance(pairs, dict):
    return rel(*pairs)
  # Relative to each tensor's largest entry, floored at 1e-6 of the largest one of
  # the whole set: five conv biases feed a train-mode BN, so their true gradient is
  # exactly 0 and both sides hold round-off (~1e-18) there.
  scale = max(np.max(np.abs(t)) for _, t in pairs.values())
  return max(float(np.max(np.abs(np.asarray(o) - t)) / max(np.max(np.abs(t)), 1e-6 * scale))
             for o, t in pairs.values())


def test_unet_parameter_counts_per_module(unet):
  for name, (ours, theirs) in unet['counts'].items():
    assert ours == theirs, name
  assert sum(o for o, _ in unet['counts'].values()) == 39_194_682  # docs/method.md, Model size.


STEP_QUANTITIES = ['train out', 'train sr', 'train fusion_seg', 'train fusion_sr', 'loss ce',
                   'loss mse', 'loss ssim', 'loss rmi', 'loss total', 'gradients']


@pytest.mark.parametrize('quantity', [
    'eval out', *STEP_QUANTITIES, *(f'{q} at step 2' for q in STEP_QUANTITIES),
    'BN running stats after 1 step', 'params after 2 SGD steps'])
def test_unet_matches_official(unet, quantity):
  value = _max_rel(unet[quantity])
  print(f'PARITY {quantity}: {value:.1e}')
  assert value <= TOL, f'{quantity}: relative difference {value:.2e} > {TOL}'


def test_unet_free_running_sgd_steps_stay_close(unet):
  """Ours from our own gradients: the float32 losses' round-off (~1e-7 of each
  gradient) moves step 1's parameters by ~1e-8, which step 2 amplifies."""
  value = _max_rel(unet['params after 2 SGD steps, free-running'])
  print(f'PARITY params after 2 SGD steps, free-running: {value:.1e}')
  assert value <= 1e-4


def test_unet_gradients_cover_every_parameter(unet):
  assert len(unet['gradients']) == unet['num params']
  assert all(np.any(t != 0) for _, t in unet['gradients'].values())


def test_deeplab_inference_path_matches_official():
  official()
  from imed_vision.models.segmentation import deeplab  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  theirs = deeplab.DeeplabV3Plus(3, 2, backbone='resnet50', super_reso=True, upscale_rate=R,
                                 sr_seg_fusion=True, output_stride=8, pretrained=False).double()
  randomize_bn(theirs, 2)
  theirs.eval()
  cfg = default.get_config()
  cfg.model.name = 'ds2f_deeplabv3plus'
  x = np.random.default_rng(1).uniform(-1, 1, (1, 128, 144, 3))  # Non-square.
  with x64():
    model = registry.create_model(cfg.model, dtype='float64')
    target = zeros_like_variables(model, jnp.zeros((1, 128, 128, 3)))
    variables, left = import_official.map_state_dict('ds2f_deeplabv3plus', state_dict64(theirs),
                                                      target)
    assert left == ['sfem']  # Official CAGL; ours MSCG (docs/method.md, DeepLabV3+ variant).
    for name, path in DEEPLAB_MODULES.items():
      assert count(variables['params'], path) == sum(
          p.numel() for p in getattr(theirs, name).parameters()), name
    with torch.no_grad():
      want = nchw_t(theirs(torch.from_numpy(nchw(x).copy())))
    got = jax.jit(lambda v, x: model.apply(v, x, train=False))(
        {'params': variables['params'], 'batch_stats': variables['batch_stats']}, x)
    value = rel(got, want)
  print(f'PARITY deeplab eval out: {value:.1e}')
  assert value <= TOL
