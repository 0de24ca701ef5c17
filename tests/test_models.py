"""Pins DS2F-UNet to docs/method.md: parameter counts, shapes, layouts and PyTorch semantics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from ds2f_jax.models import layers, mscg, registry
from ds2f_jax.models.layers import count_params


def _cfg(**kw):
  cfg = default.get_config().model
  cfg.update(kw)
  return cfg


def _param_shapes(cfg, train, lr=(64, 64)):
  model = registry.create_model(cfg)
  x = jnp.zeros((1, *lr, 3))
  return jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=train))['params']


@pytest.mark.parametrize('kw, train_total', [
    ({}, 39_194_682),
    ({'upscale': 4}, 39_205_050),
    ({'variant': 'dual_stream'}, 39_176_386),
    ({'variant': 'ds2f_after'}, 39_178_385),
])
def test_parameter_counts_match_official(kw, train_total):
  cfg = _cfg(**kw)
  assert count_params(_param_shapes(cfg, train=True)) == train_total
  assert count_params(_param_shapes(cfg, train=False)) == 28_949_698


def test_unet_part_counts():
  p = _param_shapes(_cfg(), train=True)
  enc = p['encoder']
  assert [count_params(enc[f'down{i}']) for i in range(1, 6)] == [
      38_848, 221_696, 885_760, 3_540_992, 14_159_872]
  for dec in ('seg_decoder', 'sr_decoder'):
    assert [count_params(p[dec][f'up{i}']) for i in range(6, 10)] == [
        7_605_248, 1_902_080, 475_904, 119_168]
  assert count_params(p['out_conv']) == 130
  assert count_params(p['sr_head']) == 124_288
  assert count_params(p['sfem']) == 18_296


def test_crossgl_256_count():
  a = jnp.zeros((1, 8, 8, 256))
  shapes = jax.eval_shape(lambda: mscg.CrossGL().init(jax.random.key(0), a, a, train=True))
  assert count_params(shapes['params']) == 166_520


def test_inference_path_has_no_sr_or_sfem_parameters():
  cfg = _cfg(width=4)
  model = registry.create_model(cfg)
  x = jnp.zeros((1, 32, 32, 3))
  full = jax.jit(lambda k: model.init(k, x, train=True))(jax.random.key(0))
  inf = registry.inference_variables(model, full)
  assert set(inf['params']) == {'encoder', 'seg_decoder', 'out_conv'}
  assert set(full['params']) - set(inf['params']) == {'sr_decoder', 'sr_head', 'sfem'}
  apply = jax.jit(lambda v: model.apply(v, x, train=False))
  out_full, out_inf = apply(full), apply(inf)
  np.testing.assert_array_equal(out_full, out_inf)


@pytest.mark.parametrize('lr, r', [((73, 101), 2), ((73, 101), 4), ((64, 64), 2),
                                   ((96, 128), 4), ((146, 219), 2)])
def test_output_shapes_odd_sizes(lr, r):
  cfg = _cfg(width=4, upscale=r)
  model = registry.create_model(cfg)
  x = jnp.zeros((2, *lr, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=True))
  hr = (lr[0] * r, lr[1] * r)
  outs, _ = jax.eval_shape(
      lambda v: model.apply(v, x, train=True, mutable=['batch_stats']), variables)
  assert outs.out.shape == (2, *hr, 2)
  assert outs.sr.shape == (2, *hr, 3)
  assert outs.fusion_seg.shape == (2, *hr, 2)
  assert outs.fusion_sr.shape == (2, *hr, 3)
  out = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
  assert out.shape == (2, *hr, 2) and out.dtype == jnp.float32


def test_variants_return_their_terms():
  x = jnp.zeros((1, 32, 32, 3))
  present = {}
  for variant in ('ds2f', 'ds2f_after', 'dual_stream', 'seg_only', 'seg_hr'):
    model = registry.create_model(_cfg(width=4, variant=variant))
    v = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=True))
    outs, _ = jax.eval_shape(
        lambda v: model.apply(v, x, train=True, mutable=['batch_stats']), v)
    present[variant] = tuple(t is not None for t in outs)
    if variant in ('seg_only', 'seg_hr'):  # No x r upsampling: output at input size.
      assert outs.out.shape == (1, 32, 32, 2)
  assert present == {'ds2f': (True,) * 4, 'ds2f_after': (True,) * 4,
                     'dual_stream': (True, True, False, False),
                     'seg_only': (True, False, False, False),
                     'seg_hr': (True, False, False, False)}


def _pixel_shuffle_reference(x, r):
  """PyTorch's definition, element by element, in NCHW then back to NHWC."""
  n, h, w, c = x.shape
  nchw = np.transpose(x, (0, 3, 1, 2))
  out = np.zeros((n, c // (r * r), h * r, w * r), x.dtype)
  for co in range(c // (r * r)):
    for i in range(r):
      for j in range(r):
        out[:, co, i::r, j::r] = nchw[:, co * r * r + i * r + j]
  return np.transpose(out, (0, 2, 3, 1))


@pytest.mark.parametrize('r', [2, 3, 4])
def test_pixel_shuffle_matches_pytorch_order(r):
  x = np.random.default_rng(0).normal(size=(2, 3, 5, 3 * r * r)).astype(np.float32)
  np.testing.assert_array_equal(np.asarray(layers.pixel_shuffle(jnp.asarray(x), r)),
                                _pixel_shuffle_reference(x, r))


def _bilinear_reference(x, out_hw, align_corners):
  """float64 PyTorch bilinear on NHWC, one output pixel at a time."""
  n, h, w, c = x.shape
  oh, ow = out_hw
  out = np.zeros((n, oh, ow, c))

  def src(d, i, o):
    if align_corners:
      return d * (i - 1) / (o - 1) if o > 1 else 0.0
    return max((d + 0.5) * i / o - 0.5, 0.0)

  for y in range(oh):
    sy = src(y, h, oh)
    y0 = min(int(math.floor(sy)), h - 1)
    y1, wy = min(y0 + 1, h - 1), sy - y0
    for xx in range(ow):
      sx = src(xx, w, ow)
      x0 = min(int(math.floor(sx)), w - 1)
      x1, wx = min(x0 + 1, w - 1), sx - x0
      out[:, y, xx] = ((1 - wy) * ((1 - wx) * x[:, y0, x0] + wx * x[:, y0, x1])
                       + wy * ((1 - wx) * x[:, y1, x0] + wx * x[:, y1, x1]))
  return out


@pytest.mark.parametrize('align_corners', [True, False])
@pytest.mark.parametrize('in_hw, out_hw', [((5, 7), (10, 14)), ((4, 6), (9, 13)),
                                           ((8, 8), (3, 5)), ((1, 3), (4, 6))])
def test_bilinear_resize_matches_pytorch(align_corners, in_hw, out_hw):
  x = np.random.default_rng(1).normal(size=(2, *in_hw, 3))
  got = layers.resize_bilinear(jnp.asarray(x, jnp.float32), out_hw, align_corners)
  np.testing.assert_allclose(np.asarray(got), _bilinear_reference(x, out_hw, align_corners),
                             atol=1e-5)


def test_align_corners_keeps_corner_values():
  x = jnp.arange(12.0).reshape(1, 3, 4, 1)
  y = layers.resize_bilinear(x, (7, 9), align_corners=True)
  np.testing.assert_allclose(np.asarray(y)[0, [0, 0, -1, -1], [0, -1, 0, -1], 0], [0, 3, 8, 11])


@pytest.mark.parametrize('size, expected', [(64, 32), (73, 37), (101, 51), (1, 1)])
def test_max_pool_is_3x3_stride2_ceil(size, expected):
  x = jnp.asarray(np.random.default_rng(2).normal(size=(1, size, size, 1)), jnp.float32)
  y = layers.max_pool_3x3_s2(x)
  assert y.shape == (1, expected, expected, 1)
  xn = np.pad(np.asarray(x)[0, :, :, 0], 1, constant_values=-np.inf)
  ref = np.array([[xn[2 * i:2 * i + 3, 2 * j:2 * j + 3].max() for j in range(expected)]
                  for i in range(expected)])
  np.testing.assert_array_equal(np.asarray(y)[0, :, :, 0], ref)


def test_gelu_is_exact_erf_form():
  x = np.linspace(-4, 4, 33)
  ref = 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
  np.testing.assert_allclose(np.asarray(layers.gelu(jnp.asarray(x, jnp.float32))), ref, atol=1e-6)
  assert abs(float(layers.gelu(jnp.float32(1.0))) - 0.8413447460685429) < 1e-6


def test_pytorch_default_init_bounds():
  conv = layers.Conv(32, 3, use_bias=True, groups=1)
  p = conv.init(jax.random.key(0), jnp.zeros((1, 8, 8, 16)))['params']
  bound = 1 / math.sqrt(16 * 9)
  k, b = np.asarray(p['kernel']), np.asarray(p['bias'])
  assert np.abs(k).max() <= bound and np.abs(k).max() > 0.95 * bound
  assert abs(k.std() - bound / math.sqrt(3)) < 0.05 * bound  # Uniform(+-b) has std b/sqrt(3).
  assert np.abs(b).max() <= bound and np.abs(b).max() > 0.5 * bound
  dw = layers.Conv(16, 3, groups=16, use_bias=True).init(jax.random.key(1), jnp.zeros((1, 8, 8, 16)))
  assert dw['params']['kernel'].shape == (3, 3, 1, 16)
  assert np.abs(np.asarray(dw['params']['kernel'])).max() <= 1 / 3  # fan_in = 1 * 3 * 3.


def test_batchnorm_uses_pytorch_momentum_and_eps():
  bn = layers.batch_norm(train=True, dtype=jnp.float32)
  assert bn.momentum == 0.9 and bn.epsilon == 1e-5


def test_rcab_global_pool_flag_changes_gate():
  x = jnp.asarray(np.random.default_rng(3).normal(size=(1, 6, 6, 8)), jnp.float32)
  per_pixel, pooled = mscg.RCAB(global_pool=False), mscg.RCAB(global_pool=True)
  v = per_pixel.init(jax.random.key(0), x)
  assert count_params(v) == count_params(pooled.init(jax.random.key(0), x))
  assert not np.allclose(per_pixel.apply(v, x), pooled.apply(v, x))


def test_bad_model_configs_are_rejected_by_name():
  with pytest.raises(ValueError, match='model.num_classes=1'):
    registry.validate(_cfg(num_classes=1))
  with pytest.raises(ValueError, match="model.name='nope'"):
    registry.validate(_cfg(name='nope'))
  with pytest.raises(ValueError, match="model.variant='x'"):
    registry.validate(_cfg(variant='x'))
  with pytest.raises(ValueError, match=r'too small.*>= 16'):
    registry.check_input_size(_cfg(), (8, 64))


@pytest.mark.parametrize('dilation', [1, 2])
def test_depthwise_fast_path_equals_grouped_conv(dilation):
  x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 9, 11, 8)), jnp.float32)
  conv = layers.Conv(8, 3, dilation=dilation, groups=8, use_bias=True)
  v = conv.init(jax.random.key(0), x)
  ref = jax.lax.conv_general_dilated(
      x, v['params']['kernel'], (1, 1), ((dilation, dilation),) * 2, rhs_dilation=(dilation,) * 2,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=8) + v['params']['bias']
  np.testing.assert_allclose(np.asarray(conv.apply(v, x)), np.asarray(ref), atol=1e-5)
