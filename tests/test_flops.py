"""Pins the FLOP and parameter accounting: the official figures and the counting rules
(docs/method.md §Model size and FLOPs).

Full-size models are only traced (jaxpr) and lowered, never compiled.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from configs import default
from ds2f_jax import flops
from ds2f_jax.models import layers

G = 1e9


def _cfg(**kw):
  cfg = default.get_config().model
  cfg.update(kw)
  return cfg


@pytest.mark.parametrize('kw, lr, train_g, eval_g', [
    ({}, (256, 256), 193.5, 96.3),
    ({'upscale': 4}, (128, 128), 49.1, 24.1),
    ({'variant': 'ds2f_after'}, (256, 256), 175.8, 96.3),
])
def test_unet_matches_spec(kw, lr, train_g, eval_g):
  costs = flops.model_costs(_cfg(**kw), lr)
  assert costs['train'].flops == pytest.approx(train_g * G, rel=0.02)
  assert costs['inference'].flops == pytest.approx(eval_g * G, rel=0.02)
  assert costs['inference'].params == 28_949_698
  assert costs['train'].xla_flops is None


def test_unet_exact_counts_and_xla_estimate():
  costs = flops.model_costs(_cfg(), (256, 256), xla=True)
  # Ours, exactly: the official figure less the uncounted depthwise convs (0.094 GFLOP).
  assert costs['train'].flops == 193_441_300_608
  assert costs['inference'].flops == 96_343_162_880
  assert (costs['train'].params, costs['inference'].params) == (39_194_682, 28_949_698)
  # XLA also counts the element-wise work: above the conv/matmul count.
  assert costs['train'].xla_flops == pytest.approx(200.6 * G, rel=0.02)
  assert costs['inference'].xla_flops == pytest.approx(98.9 * G, rel=0.02)


def test_deeplab_r50_os8():
  costs = flops.model_costs(_cfg(name='ds2f_deeplabv3plus'), (256, 256))
  assert costs['inference'].flops == pytest.approx(91.2 * G, rel=0.02)  # Official, same network.
  # Official 215.3 with CAGL; CrossGL(256, 256) at 64^2 costs ~1.1 GFLOP more.
  assert costs['train'].flops == 216_379_424_896
  assert (costs['train'].params, costs['inference'].params) == (42_249_370, 40_347_762)


def test_seg_only_has_no_training_overhead():
  costs = flops.model_costs(_cfg(width=8, variant='seg_only'), (64, 64))
  assert costs['train'].flops == costs['inference'].flops
  assert costs['train'].params == costs['inference'].params


def test_conv_rule_matches_formula():
  """2 * out elements * kh * kw * in / groups, with stride, dilation and groups."""
  x = jax.ShapeDtypeStruct((2, 17, 19, 12), jnp.float32)
  for k, s, d, g, out in ((3, 1, 1, 1, 8), (3, 2, 2, 1, 8), (5, 2, 1, 3, 6), (1, 1, 1, 1, 5)):
    conv = layers.Conv(out, k, s, dilation=d, groups=g)
    v = jax.eval_shape(lambda: conv.init(jax.random.key(0), jnp.zeros(x.shape)))
    y = jax.eval_shape(lambda v, x: conv.apply(v, x), v, x)
    got = flops.conv_matmul_flops(lambda v, x: conv.apply(v, x), v, x)
    assert got == 2 * y.size * k * k * 12 // g, (k, s, d, g)


def test_depthwise_and_resizes_are_not_counted():
  """Both are element-wise / fixed linear maps here, and uncounted in PyTorch's convention."""
  x = jax.ShapeDtypeStruct((1, 16, 16, 8), jnp.float32)
  dw = layers.Conv(8, 3, groups=8, use_bias=True)
  v = jax.eval_shape(lambda: dw.init(jax.random.key(0), jnp.zeros(x.shape)))
  assert flops.conv_matmul_flops(lambda v, x: dw.apply(v, x), v, x) == 0
  resize = lambda x: layers.resize_bilinear(x, (40, 24), align_corners=True)
  assert flops.conv_matmul_flops(resize, x) == 0
  assert flops.conv_matmul_flops(jax.jit(resize), x) == 0  # Constant inside a nested jaxpr.
  assert flops.conv_matmul_flops(jax.jit(lambda x: resize(x * 2.0)), x) == 0


def test_learned_matmuls_count_everywhere():
  """dot_general with batch dims; inside jit, remat, scan (x length) and cond (largest branch)."""
  a = jax.ShapeDtypeStruct((4, 5, 6), jnp.float32)
  b = jax.ShapeDtypeStruct((4, 6, 7), jnp.float32)
  bmm = lambda a, b: jnp.einsum('bij,bjk->bik', a, b)
  macs = 4 * 5 * 6 * 7
  assert flops.conv_matmul_flops(bmm, a, b) == 2 * macs
  assert flops.conv_matmul_flops(jax.jit(bmm), a, b) == 2 * macs
  assert flops.conv_matmul_flops(jax.checkpoint(bmm), a, b) == 2 * macs

  def scanned(a, b):
    return jax.lax.scan(lambda c, _: (bmm(c, b) @ jnp.ones((7, 6)), None), a, None, length=3)[0]

  # Per step: the bmm, then (4*5, 7) @ a constant (7, 6) matrix, not counted.
  assert flops.conv_matmul_flops(scanned, a, b) == 3 * 2 * macs

  def branches(i, a, b):
    return jax.lax.switch(i, [lambda a, b: bmm(a, b), lambda a, b: bmm(a, b) * 2 + bmm(a, b)],
                          a, b)

  i = jax.ShapeDtypeStruct((), jnp.int32)
  assert flops.conv_matmul_flops(branches, i, a, b) == 2 * 2 * macs

  dense = nn.Dense(3)
  x = jax.ShapeDtypeStruct((2, 10), jnp.float32)
  v = jax.eval_shape(lambda: dense.init(jax.random.key(0), jnp.zeros(x.shape)))
  assert flops.conv_matmul_flops(lambda v, x: dense.apply(v, x), v, x) == 2 * 2 * 10 * 3


def test_xla_estimate_counts_elementwise_work():
  x = jax.ShapeDtypeStruct((64, 64), jnp.float32)
  w = jax.ShapeDtypeStruct((64, 32), jnp.float32)
  f = lambda x, w: jnp.tanh(x @ w)
  assert flops.conv_matmul_flops(f, x, w) == 2 * 64 * 64 * 32
  assert flops.xla_flops(f, x, w) >= 2 * 64 * 64 * 32
