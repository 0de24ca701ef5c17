"""What the official-code parity found, checked without torch.

BatchNorm against a NumPy model of PyTorch's BatchNorm2d: train mode normalises
with the biased batch variance and stores the unbiased one (x n / (n - 1),
n = N*H*W) in the running variance, momentum 0.1. The SR head reconstructs the
input's channels.
"""

import jax
import jax.numpy as jnp
import numpy as np

from configs import default
from ds2f_jax.models import layers, registry


def _reference(x, scale, bias, mean0, var0, eps=1e-5, momentum=0.1):
  n = x.shape[0] * x.shape[1] * x.shape[2]
  mu = x.mean((0, 1, 2))
  var = ((x - mu)**2).mean((0, 1, 2))
  y = (x - mu) / np.sqrt(var + eps) * scale + bias
  return (y, (1 - momentum) * mean0 + momentum * mu,
          (1 - momentum) * var0 + momentum * var * n / (n - 1))


def test_train_step_matches_pytorch_semantics():
  rng = np.random.default_rng(0)
  x = rng.normal(1.0, 2.0, (2, 3, 5, 4))  # n = 30: the n / (n - 1) factor is 3 %.
  scale, bias = rng.uniform(0.5, 1.5, 4), rng.normal(0, 0.2, 4)
  mean0, var0 = rng.normal(0, 0.2, 4), rng.uniform(0.5, 1.5, 4)
  variables = {'params': {'scale': jnp.asarray(scale, jnp.float32),
                          'bias': jnp.asarray(bias, jnp.float32)},
               'batch_stats': {'mean': jnp.asarray(mean0, jnp.float32),
                               'var': jnp.asarray(var0, jnp.float32)}}
  bn = layers.batch_norm(train=True, dtype=jnp.float32)
  y, new = bn.apply(variables, jnp.asarray(x, jnp.float32), mutable=['batch_stats'])
  want_y, want_mean, want_var = _reference(x, scale, bias, mean0, var0)
  np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(new['batch_stats']['mean'], want_mean, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(new['batch_stats']['var'], want_var, rtol=1e-6)
  # Eval mode uses the running statistics.
  y_eval = layers.batch_norm(train=False, dtype=jnp.float32).apply(variables, jnp.asarray(x))
  np.testing.assert_allclose(y_eval, (x - mean0) / np.sqrt(var0 + 1e-5) * scale + bias,
                             rtol=1e-5, atol=1e-5)


def test_variable_names_and_bfloat16_statistics():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4, 4, 3)), jnp.bfloat16)
  bn = layers.batch_norm(train=True, dtype=jnp.bfloat16)
  variables = bn.init(jax.random.key(0), x)
  assert set(variables['params']) == {'scale', 'bias'}
  assert set(variables['batch_stats']) == {'mean', 'var'}
  y, new = bn.apply(variables, x, mutable=['batch_stats'])
  assert y.dtype == jnp.bfloat16
  assert new['batch_stats']['var'].dtype == jnp.float32
  np.testing.assert_array_equal(variables['batch_stats']['var'], np.ones(3))  # init: no update.


def test_sr_head_reconstructs_the_input_channels():
  cfg = default.get_config().model
  cfg.width, cfg.in_channels = 4, 1
  model = registry.create_model(cfg)
  x = jnp.zeros((2, 16, 24, 1))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=True))
  assert variables['params']['sr_head']['Conv_2']['kernel'].shape == (3, 3, 32, 1 * 2 * 2)
  outs = jax.eval_shape(lambda v: model.apply(v, x, train=True, mutable=['batch_stats'])[0],
                        variables)
  assert outs.sr.shape == outs.fusion_sr.shape == (2, 32, 48, 1)
