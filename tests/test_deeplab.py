"""Pins DS2F-DeepLabV3+ to docs/method.md §DeepLabV3+ and the pretrained loading.

Counts and shapes use jax.eval_shape (no compile). Numerics compare against
float64 NumPy references of the formulas in docs/method.md: ASPP and decoder at small
widths, the ResNet-50 backbone at full width on a small input.
"""

import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from ds2f_jax.models import deeplab, pretrained, registry
from tests import jaxpr_walk
from ds2f_jax.models.layers import count_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAGL, CROSSGL = 206_816, 166_520  # docs/method.md §Model size and FLOPs.


def _cfg(**kw):
  cfg = default.get_config().model
  cfg.update(name='ds2f_deeplabv3plus', **kw)
  return cfg


def _variables(cfg, train, lr=(128, 128), batch=2):
  model = registry.create_model(cfg)
  x = jnp.zeros((batch, *lr, 3))
  return model, x, jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=train))


# ---------------------------------------------------------------- counts, shapes, validation


@pytest.mark.parametrize('backbone, n_backbone, official_total, official_inference', [
    ('resnet50', 23_508_032, 42_289_666, 40_347_762),
    ('resnet101', 42_500_160, 61_281_794, 59_339_890),
])
def test_parameter_counts(backbone, n_backbone, official_total, official_inference):
  p = _variables(_cfg(backbone=backbone), train=True)[2]['params']
  parts = {k: count_params(v) for k, v in p.items()}
  assert count_params(p['encoder']['backbone']) == n_backbone
  assert count_params(p['encoder']['aspp']) == 15_535_616
  assert parts == {'encoder': n_backbone + 15_535_616, 'seg_decoder': 1_303_600,
                   'sr_decoder': 1_303_600, 'sr_head': 431_488, 'sfem': CROSSGL,
                   'out_conv': 514}
  # The official totals with CAGL; ours swap it for CrossGL(256, 256) (docs/method.md D4).
  assert count_params(p) == official_total - CAGL + CROSSGL
  inference = _variables(_cfg(backbone=backbone), train=False)[2]['params']
  assert set(inference) == {'encoder', 'seg_decoder', 'out_conv'}
  assert count_params(inference) == official_inference


@pytest.mark.parametrize('lr, r, os_', [((128, 128), 2, 8), ((160, 224), 2, 8),
                                        ((131, 157), 4, 16), ((128, 129), 3, 8)])
def test_output_shapes(lr, r, os_):
  model, x, variables = _variables(_cfg(upscale=r, output_stride=os_), train=True, lr=lr)
  hr = (lr[0] * r, lr[1] * r)
  outs, _ = jax.eval_shape(
      lambda v: model.apply(v, x, train=True, mutable=['batch_stats']), variables)
  assert [t.shape for t in outs] == [(2, *hr, 2), (2, *hr, 3), (2, *hr, 2), (2, *hr, 3)]
  assert jax.eval_shape(lambda v: model.apply(v, x, train=False), variables).shape == (2, *hr, 2)
  feats = jax.eval_shape(lambda v: model.apply(v, x, False, method=lambda m, x, t: m.encoder(
      x, t)), variables)
  stride4 = tuple(math.ceil(s / 4) for s in lr)
  assert feats[0].shape == (2, *stride4, 256)  # layer1: ceil-mode stride 4.
  assert feats[1].shape == (2, *(math.ceil(s / os_) for s in lr), 256)  # ASPP at OS.


@pytest.mark.parametrize('variant', ['ds2f', 'ds2f_after', 'dual_stream', 'seg_only', 'seg_hr'])
def test_inference_path_has_no_sr_or_sfem_parameters(variant):
  cfg = _cfg(variant=variant)
  model, _, full = _variables(cfg, train=True)
  inference = registry.inference_variables(model, full, (1, 128, 128, 3))
  assert set(inference['params']) == {'encoder', 'seg_decoder', 'out_conv'}
  extra = set(full['params']) - set(inference['params'])
  assert extra == {'ds2f': {'sr_decoder', 'sr_head', 'sfem'},
                   'ds2f_after': {'sr_decoder', 'sr_head', 'sfem'},
                   'dual_stream': {'sr_decoder', 'sr_head'},
                   'seg_only': set(), 'seg_hr': set()}[variant]


def _convs(jaxpr):
  """Every conv_general_dilated eqn in order, nested ones (custom_vjp of layers.conv2d) included."""
  return [e for e in jaxpr_walk.eqns(jaxpr) if e.primitive.name == 'conv_general_dilated']


def test_backbone_strides_and_dilations():
  """Every 3x3 conv's (stride, dilation, padding), in order (docs/method.md §DeepLabV3+)."""
  for os_, strides in ((8, (1, 2, 1, 1)), (16, (1, 2, 2, 1))):
    net = deeplab.ResNet(output_stride=os_)
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    v = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros(x.shape), False))
    jaxpr = jax.make_jaxpr(lambda v, x: net.apply(v, x, False))(v, x)
    convs = [e.params for e in _convs(jaxpr.jaxpr)]
    got = [(p['window_strides'][0], p['rhs_dilation'][0], p['padding'][0][0])
           for p in convs]
    want = [(2, 1, 3)]  # Stem 7x7.
    for stage, n in enumerate((3, 4, 6, 3)):
      for b in range(n):
        s = strides[stage] if b == 0 else 1
        d = (2, 4, 8)[b] if stage == 3 else 1
        want += [(1, 1, 0), (s, d, d), (1, 1, 0)] + ([(s, 1, 0)] if b == 0 else [])
    assert got == want


def test_aspp_rates_follow_output_stride():
  for os_, rates in ((8, (12, 24, 36)), (16, (6, 12, 18))):
    enc = deeplab.DeepLabEncoder(output_stride=os_)
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    v = jax.eval_shape(lambda: enc.init(jax.random.key(0), jnp.zeros(x.shape), False))
    jaxpr = jax.make_jaxpr(lambda v, x: enc.apply(v, x, False))(v, x)
    dil = [e.params['rhs_dilation'][0] for e in _convs(jaxpr.jaxpr)
           if e.invars[1].aval.shape[2] == 2048
           and e.invars[1].aval.shape[0] == 3]
    assert tuple(dil) == rates


def test_init_bounds():
  """Backbone: kaiming_uniform(a=0), U(+-sqrt(6/fan_in)); heads: PyTorch's U(+-1/sqrt(fan_in))."""
  x = jnp.zeros((1, 8, 8, 64))
  p = jax.jit(lambda k: deeplab.Bottleneck(16).init(k, x, False))(jax.random.key(0))['params']
  for name, fan_in in (('conv1', 64), ('conv2', 16 * 9), ('conv3', 16)):
    k = np.asarray(p[name]['kernel'])
    bound = math.sqrt(6 / fan_in)
    assert np.abs(k).max() <= bound and np.abs(k).max() > 0.95 * bound, name
    assert abs(k.std() - bound / math.sqrt(3)) < 0.05 * bound, name
  assert np.all(np.asarray(p['bn1']['scale']) == 1) and np.all(np.asarray(p['bn1']['bias']) == 0)
  dec = deeplab.DeepLabDecoder(features=32, low_features=4)
  d = jax.jit(lambda k: dec.init(k, (x, jnp.zeros((1, 4, 4, 12))), False))(jax.random.key(1))
  k = np.asarray(d['params']['conv1']['Conv_0']['kernel'])
  bound = 1 / math.sqrt((4 + 12) * 9)
  assert np.abs(k).max() <= bound and np.abs(k).max() > 0.95 * bound


def test_bad_configs_are_rejected_by_name(tmp_path):
  with pytest.raises(ValueError, match=r"model.backbone='resnet18'"):
    registry.validate(_cfg(backbone='resnet18'))
  with pytest.raises(ValueError, match=r'model.output_stride=32'):
    registry.validate(_cfg(output_stride=32))
  with pytest.raises(FileNotFoundError, match=r'model.pretrained=.*no such file'):
    registry.validate(_cfg(pretrained=str(tmp_path / 'missing.npz')))
  with pytest.raises(ValueError, match=r"model.pretrained='x.npz'.*only for the ResNet"):
    registry.validate(_unet_cfg(pretrained='x.npz'))
  with pytest.raises(ValueError, match=r'too small.*>= 128'):
    registry.check_input_size(_cfg(), (127, 256))
  registry.check_input_size(_cfg(), (128, 129))
  with pytest.raises(ValueError, match=r'^batch_size=1 is too small'):
    registry.check_batch_size(_cfg(), 1)
  registry.check_batch_size(_cfg(), 2)
  registry.check_batch_size(_unet_cfg(), 1)


def _unet_cfg(**kw):
  cfg = default.get_config().model
  cfg.update(kw)
  return cfg


# ---------------------------------------------------------------- float64 NumPy references


def _conv_ref(x, w, stride=1, dilation=1, pad=None, bias=None):
  """NHWC x, PyTorch OIHW w, float64: sum over taps of shifted slices times w[:, :, i, j]."""
  o, _, kh, kw = w.shape
  pad = (kh - 1) // 2 * dilation if pad is None else pad
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  h = (xp.shape[1] - dilation * (kh - 1) - 1) // stride + 1
  wd = (xp.shape[2] - dilation * (kw - 1) - 1) // stride + 1
  y = np.zeros((x.shape[0], h, wd, o))
  for i in range(kh):
    for j in range(kw):
      patch = xp[:, i * dilation:i * dilation + stride * (h - 1) + 1:stride,
                 j * dilation:j * dilation + stride * (wd - 1) + 1:stride]
      y += (np.ascontiguousarray(patch).reshape(-1, w.shape[1]) @ w[:, :, i, j].T).reshape(
          y.shape)
  return y if bias is None else y + bias


def _bn_ref(x, gamma, beta, mean=None, var=None):
  """Eval mode with (mean, var); train mode (biased batch statistics) without."""
  if mean is None:
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
  return (x - mean) / np.sqrt(var + 1e-5) * gamma + beta


def _relu(x):
  return np.maximum(x, 0)


def _interp_ref(n_in, n_out):
  """PyTorch bilinear, align_corners=False: half-pixel source, clamped at 0."""
  m = np.zeros((n_out, n_in))
  for d in range(n_out):
    s = max((d + 0.5) * n_in / n_out - 0.5, 0.0)
    lo = min(int(math.floor(s)), n_in - 1)
    hi = min(lo + 1, n_in - 1)
    m[d, lo] += 1 - (s - lo)
    m[d, hi] += s - lo
  return m


def _t(k):
  """Our HWIO kernel -> PyTorch OIHW, float64."""
  return np.transpose(np.asarray(k, np.float64), (3, 2, 0, 1))


def _random_variables(module, seed, *args):
  """Variables of module.init(*args) with random values: BN gains / stats in [0.5, 1.5]."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *args))
  return jax.tree_util.tree_map(
      lambda a: jnp.asarray(rng.uniform(0.5, 1.5, a.shape) if len(a.shape) == 1 else
                            rng.normal(0, 1 / math.sqrt(np.prod(a.shape[:-1])), a.shape),
                            jnp.float32), shapes)


def test_aspp_matches_reference_train_mode():
  """Five branches, 1x1 projection, double BN-ReLU; BN on batch statistics (incl. image pool)."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 9, 11, 16))
  aspp = deeplab.ASPP((2, 4, 6), features=8)
  v = _random_variables(aspp, 1, jnp.zeros(x.shape), False)
  got, _ = jax.jit(lambda v, x: aspp.apply(v, x, True, mutable=['batch_stats']))(
      v, jnp.asarray(x, jnp.float32))
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), v['params'])

  def cbr(q, y, **kw):
    return _relu(_bn_ref(_conv_ref(y, _t(q['Conv_0']['kernel']), **kw),
                         q['BatchNorm_0']['scale'], q['BatchNorm_0']['bias']))

  outs = [cbr(p['branch0'], x)] + [cbr(p[f'branch{i}'], x, dilation=d)
                                   for i, d in enumerate((2, 4, 6), start=1)]
  pooled = cbr(p['image_pool'], x.mean(axis=(1, 2), keepdims=True))
  outs.append(np.broadcast_to(pooled, x.shape[:3] + (8,)))
  y = cbr(p['project'], np.concatenate(outs, -1))
  want = _relu(_bn_ref(y, p['project_bn2']['scale'], p['project_bn2']['bias']))
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)


def test_decoder_matches_reference_eval_mode():
  rng = np.random.default_rng(2)
  low, high = rng.normal(size=(2, 13, 15, 12)), rng.normal(size=(2, 4, 4, 10))
  dec = deeplab.DeepLabDecoder(features=8, low_features=4)
  feats = (jnp.asarray(low, jnp.float32), jnp.asarray(high, jnp.float32))
  v = _random_variables(dec, 3, feats, False)
  got = jax.jit(lambda v, f: dec.apply(v, f, False))(v, feats)
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), v['params'])
  s = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), v['batch_stats'])
  y_low = _conv_ref(low, _t(p['conv_low']['kernel']), bias=p['conv_low']['bias'])
  up = np.einsum('ah,bw,nhwc->nabc', _interp_ref(4, 13), _interp_ref(4, 15), high)
  y = np.concatenate([y_low, up], -1)
  for name in ('conv1', 'conv2'):
    y = _relu(_bn_ref(_conv_ref(y, _t(p[name]['Conv_0']['kernel'])),
                      p[name]['BatchNorm_0']['scale'], p[name]['BatchNorm_0']['bias'],
                      s[name]['BatchNorm_0']['mean'], s[name]['BatchNorm_0']['var']))
  np.testing.assert_allclose(np.asarray(got), y, atol=1e-4)


# ---------------------------------------------------------------- pretrained backbone


def _torchvision_resnet50_layout():
  """Key -> shape of torchvision's resnet50 state dict (fc and counters included)."""
  shapes = {'conv1.weight': (64, 3, 7, 7)}

  def bn(name, c):
    shapes.update({f'{name}.weight': (c,), f'{name}.bias': (c,), f'{name}.running_mean': (c,),
                   f'{name}.running_var': (c,), f'{name}.num_batches_tracked': ()})

  bn('bn1', 64)
  in_ch = 64
  for stage, n in enumerate((3, 4, 6, 3), start=1):
    planes = 64 * 2**(stage - 1)
    for b in range(n):
      pre = f'layer{stage}.{b}'
      shapes[f'{pre}.conv1.weight'] = (planes, in_ch, 1, 1)
      shapes[f'{pre}.conv2.weight'] = (planes, planes, 3, 3)
      shapes[f'{pre}.conv3.weight'] = (planes * 4, planes, 1, 1)
      for k, c in ((1, planes), (2, planes), (3, planes * 4)):
        bn(f'{pre}.bn{k}', c)
      if b == 0:
        shapes[f'{pre}.downsample.0.weight'] = (planes * 4, in_ch, 1, 1)
        bn(f'{pre}.downsample.1', planes * 4)
      in_ch = planes * 4
  shapes.update({'fc.weight': (1000, 2048), 'fc.bias': (1000,)})
  return shapes


def _random_state_dict(seed=0):
  rng = np.random.default_rng(seed)
  state = {}
  for k, shape in _torchvision_resnet50_layout().items():
    if k.endswith('num_batches_tracked'):
      state[k] = np.array(100, np.int64)
    elif k.endswith('running_var'):
      state[k] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
    elif k.endswith(('running_mean', '.bias')):
      state[k] = rng.normal(0, 0.2, shape).astype(np.float32)
    elif len(shape) == 1:  # BN gamma.
      state[k] = rng.uniform(0.5, 1.2, shape).astype(np.float32)
    else:
      state[k] = (rng.normal(size=shape) * math.sqrt(2 / np.prod(shape[1:]))).astype(np.float32)
  return state


def _resnet50_ref(state, x):
  """float64 ResNet-50 v1.5 at OS8 (docs/method.md §DeepLabV3+) from a torchvision state dict,
  eval-mode BN."""
  st = {k: np.asarray(v, np.float64) for k, v in state.items()}

  def bn(name, y):
    return _bn_ref(y, st[f'{name}.weight'], st[f'{name}.bias'], st[f'{name}.running_mean'],
                   st[f'{name}.running_var'])

  y = _relu(bn('bn1', _conv_ref(x, st['conv1.weight'], stride=2, pad=3)))
  yp = np.pad(y, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  h, w = (y.shape[1] + 1) // 2, (y.shape[2] + 1) // 2
  y = np.max([yp[:, i:i + 2 * h:2, j:j + 2 * w:2] for i in range(3) for j in range(3)], axis=0)
  low = None
  for stage, n in enumerate((3, 4, 6, 3), start=1):
    for b in range(n):
      pre = f'layer{stage}.{b}'
      s = (1, 2, 1, 1)[stage - 1] if b == 0 else 1
      d = (2, 4, 8)[b] if stage == 4 else 1
      t = _relu(bn(f'{pre}.bn1', _conv_ref(y, st[f'{pre}.conv1.weight'])))
      t = _relu(bn(f'{pre}.bn2', _conv_ref(t, st[f'{pre}.conv2.weight'], s, d)))
      t = bn(f'{pre}.bn3', _conv_ref(t, st[f'{pre}.conv3.weight']))
      if b == 0:
        y = bn(f'{pre}.downsample.1', _conv_ref(y, st[f'{pre}.downsample.0.weight'], s))
      y = _relu(t + y)
    if stage == 1:
      low = y
  return low, y


@pytest.fixture(scope='module')
def loaded_backbone(tmp_path_factory):
  """A random torchvision state dict -> .npz -> load_backbone -> our backbone's features."""
  state = _random_state_dict()
  path = str(tmp_path_factory.mktemp('weights') / 'resnet50.npz')
  np.savez(path, **state)
  _, _, shapes = _variables(_cfg(), train=True)
  zeros = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  variables = pretrained.load_backbone(zeros, path)
  # Everything outside the backbone is untouched.
  for part in (variables['params']['encoder']['aspp'], variables['params']['sfem']):
    assert not any(np.any(a) for a in jax.tree_util.tree_leaves(part))
  backbone = {c: variables[c]['encoder']['backbone'] for c in ('params', 'batch_stats')}
  x = np.random.default_rng(1).normal(size=(2, 75, 91, 3))
  net = deeplab.ResNet()
  feats = jax.jit(lambda v, x: net.apply(v, x, False))(backbone, jnp.asarray(x, jnp.float32))
  return state, x, [np.asarray(f) for f in feats]


def test_pretrained_backbone_reproduces_reference(loaded_backbone):
  state, x, (low, high) = loaded_backbone
  low_ref, high_ref = _resnet50_ref(state, x)
  assert low.shape == low_ref.shape == (2, 19, 23, 256)
  assert high.shape == high_ref.shape == (2, 10, 12, 2048)
  for got, ref in ((low, low_ref), (high, high_ref)):
    assert np.abs(ref).max() > 0.5  # Not collapsed: the comparison has teeth.
    np.testing.assert_allclose(got, ref, atol=1e-4 * max(1.0, np.abs(ref).max()))


def test_torchvision_pth_converts_and_matches_torch(loaded_backbone, tmp_path):
  """A .pth in torchvision's layout -> the conversion script -> the same features as torch."""
  torch = pytest.importorskip('torch')
  F = torch.nn.functional
  state, x, (low, high) = loaded_backbone
  pth, npz = tmp_path / 'resnet50.pth', tmp_path / 'converted.npz'
  torch.save({'state_dict': {f'module.{k}': torch.from_numpy(np.array(v))
                             for k, v in state.items()}}, pth)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
  subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'convert_torchvision_resnet.py'),
                  str(pth), str(npz)], check=True, env=env, capture_output=True)
  converted = pretrained.read_npz(str(npz))
  kept = {k for k in state if not k.startswith('fc.') and not k.endswith('num_batches_tracked')}
  assert set(converted) == kept
  for k in kept:
    np.testing.assert_array_equal(converted[k], state[k])

  sd = {k: torch.from_numpy(v).double() for k, v in converted.items()}

  def bn(name, y):
    return F.batch_norm(y, sd[f'{name}.running_mean'], sd[f'{name}.running_var'],
                        sd[f'{name}.weight'], sd[f'{name}.bias'], training=False, eps=1e-5)

  with torch.no_grad():
    y = torch.from_numpy(x).permute(0, 3, 1, 2).double()
    y = F.max_pool2d(F.relu(bn('bn1', F.conv2d(y, sd['conv1.weight'], stride=2, padding=3))),
                     3, 2, 1)
    for stage, n in enumerate((3, 4, 6, 3), start=1):
      for b in range(n):
        pre = f'layer{stage}.{b}'
        s = (1, 2, 1, 1)[stage - 1] if b == 0 else 1
        d = (2, 4, 8)[b] if stage == 4 else 1
        t = F.relu(bn(f'{pre}.bn1', F.conv2d(y, sd[f'{pre}.conv1.weight'])))
        t = F.relu(bn(f'{pre}.bn2', F.conv2d(t, sd[f'{pre}.conv2.weight'], stride=s,
                                             padding=d, dilation=d)))
        t = bn(f'{pre}.bn3', F.conv2d(t, sd[f'{pre}.conv3.weight']))
        if b == 0:
          y = bn(f'{pre}.downsample.1', F.conv2d(y, sd[f'{pre}.downsample.0.weight'], stride=s))
        y = F.relu(t + y)
      if stage == 1:
        low_ref = y.permute(0, 2, 3, 1).numpy()
    high_ref = y.permute(0, 2, 3, 1).numpy()
  for got, ref in ((low, low_ref), (high, high_ref)):
    np.testing.assert_allclose(got, ref, atol=1e-4 * max(1.0, np.abs(ref).max()))


def test_pretrained_errors_name_the_key(tmp_path):
  _, _, shapes = _variables(_cfg(), train=True)
  zeros = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  with pytest.raises(FileNotFoundError, match='no such file'):
    pretrained.load_backbone(zeros, str(tmp_path / 'none.npz'))
  pth = tmp_path / 'w.pth'
  pth.write_bytes(b'x')
  with pytest.raises(ValueError, match='convert_torchvision_resnet'):
    pretrained.load_backbone(zeros, str(pth))
  backbone = {c: zeros[c]['encoder']['backbone'] for c in ('params', 'batch_stats')}
  state = _random_state_dict()

  def attempt(mutate):
    s = dict(state)
    mutate(s)
    return pretrained.load_resnet(backbone, s, 'w.npz')

  with pytest.raises(ValueError, match=r"w.npz: missing key 'layer3\.5\.bn2\.running_var'"):
    attempt(lambda s: s.pop('layer3.5.bn2.running_var'))
  with pytest.raises(ValueError, match=r"'layer2\.0\.conv2\.weight' has shape \(128, 128, 1, 1\)"
                                      r".*\(128, 128, 3, 3\)"):
    attempt(lambda s: s.update({'layer2.0.conv2.weight': np.zeros((128, 128, 1, 1))}))
  with pytest.raises(ValueError, match=r"unexpected key 'layer3\.6\.conv1\.weight'"):
    attempt(lambda s: s.update({'layer3.6.conv1.weight': np.zeros((256, 1024, 1, 1))}))
  unet = registry.create_model(_unet_cfg(width=4))
  unet_vars = jax.eval_shape(lambda: unet.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), True))
  with pytest.raises(ValueError, match='no encoder/backbone'):
    pretrained.load_backbone(unet_vars, str(pth))
