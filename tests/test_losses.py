"""Losses against float64 NumPy references written from docs/method.md §Losses."""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from ds2f_jax import losses


class Outputs(NamedTuple):
  out: Optional[jax.Array]
  sr: Optional[jax.Array]
  fusion_seg: Optional[jax.Array]
  fusion_sr: Optional[jax.Array]


def _x64():
  """Local float64 for the reference only (name differs across jax versions)."""
  if hasattr(jax, 'enable_x64'):
    return jax.enable_x64(True)
  from jax.experimental import enable_x64  # pylint: disable=g-import-not-at-top
  return enable_x64()


def _masks(rng, n, h, w, num_classes):
  """Smooth random fields thresholded into thin vessel-like bands (+ blobs)."""
  yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
  out = []
  for _ in range(n):
    f = np.zeros((h, w))
    for _ in range(6):
      ky, kx = rng.normal(size=2) * 12
      f += np.sin(ky * yy + kx * xx + rng.uniform(0, 2 * np.pi))
    m = np.zeros((h, w), np.int32)
    m[np.abs(f) < np.quantile(np.abs(f), 0.2)] = 1
    if num_classes == 3:
      m[f > np.quantile(f, 0.85)] = 2
    out.append(m)
  return np.stack(out)


def _logits(rng, mask, num_classes, kind):
  """Logits of a given quality for the mask: rand, good, near or perfect."""
  sign = 2.0 * np.eye(num_classes)[mask] - 1.0
  noise = rng.normal(size=sign.shape)
  z = {
      'rand': 2.0 * noise,
      'good': 4.0 * sign + 2.0 * noise,
      'near': 10.0 * sign + 0.5 * noise,
      'perfect': 20.0 * sign,
  }[kind]
  return z.astype(np.float32)


# ---------------------------------------------------------------------------
# float64 NumPy references, following docs/method.md §Losses literally.


def np_cross_entropy(logits, labels):
  z = np.asarray(logits, np.float64)
  zmax = z.max(-1, keepdims=True)
  lse = np.log(np.exp(z - zmax).sum(-1)) + zmax[..., 0]
  picked = np.take_along_axis(z, labels[..., None], -1)[..., 0]
  return np.mean(lse - picked)


def np_ssim(x, y, data_range=1.0, win=11, sigma=1.5, k1=0.01, k2=0.03):
  """2-D outer-product window, valid correlation (equal to separable)."""
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  c = np.arange(win) - win // 2
  g = np.exp(-c**2 / (2 * sigma**2))
  g /= g.sum()
  w2 = np.outer(g, g)
  ho, wo = x.shape[1] - win + 1, x.shape[2] - win + 1

  def filt(a):
    out = np.zeros((a.shape[0], ho, wo, a.shape[3]))
    for i in range(win):
      for j in range(win):
        out += w2[i, j] * a[:, i:i + ho, j:j + wo, :]
    return out

  mx, my = filt(x), filt(y)
  sxx = filt(x * x) - mx**2
  syy = filt(y * y) - my**2
  sxy = filt(x * y) - mx * my
  c1, c2 = (k1 * data_range)**2, (k2 * data_range)**2
  smap = ((2 * mx * my + c1) * (2 * sxy + c2) /
          ((mx**2 + my**2 + c1) * (sxx + syy + c2)))
  return smap.mean(axis=(1, 2)).mean()


def np_avg_pool3(x):
  """avg_pool2d(3, 3, padding=1, count_include_pad=True) on NHWC."""
  n, h, w, c = x.shape
  xp = np.zeros((n, h + 2, w + 2, c))
  xp[:, 1:h + 1, 1:w + 1] = x
  ho, wo = (h - 1) // 3 + 1, (w - 1) // 3 + 1
  out = np.zeros((n, ho, wo, c))
  for a in range(3):
    for b in range(3):
      out += xp[:, a::3, b::3][:, :ho, :wo]
  return out / 9.0


def np_rmi_parts(logits, labels, num_classes, eps=5e-4):
  """Steps 1-9 of docs/method.md §RMI; returns (bce, rmi)."""
  z = np.asarray(logits, np.float64)
  valid = labels < num_classes
  y = np.eye(num_classes)[np.where(valid, labels, 0)] * valid[..., None]
  bce_map = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
  bce = (bce_map * valid[..., None]).sum() / (valid.sum() + 1)
  p = 1.0 / (1.0 + np.exp(-z)) * valid[..., None] + 1e-6
  yp, pp = np_avg_pool3(y), np_avg_pool3(p)
  n, h, w, _ = yp.shape
  per = np.zeros((n, num_classes))
  for i in range(n):
    for c in range(num_classes):
      rows_y = [yp[i, a:a + h - 2, b:b + w - 2, c].ravel()
                for a in range(3) for b in range(3)]
      rows_p = [pp[i, a:a + h - 2, b:b + w - 2, c].ravel()
                for a in range(3) for b in range(3)]
      ym = np.stack(rows_y)
      pm = np.stack(rows_p)
      ym -= ym.mean(1, keepdims=True)
      pm -= pm.mean(1, keepdims=True)
      syp = ym @ pm.T
      s_inv = np.linalg.inv(pm @ pm.T + eps * np.eye(9))
      a_mat = ym @ ym.T - syp @ s_inv @ syp.T
      chol = np.linalg.cholesky(a_mat + eps * np.eye(9))
      per[i, c] = np.log(np.diag(chol) + 1e-8).sum()
  return bce, per.mean(0).sum() / 9.0


def np_rmi(logits, labels, num_classes):
  bce, rmi = np_rmi_parts(logits, labels, num_classes)
  return 0.5 * bce + 0.5 * rmi


def _jnp_pool_vectors(x):
  """Pooled, shifted and centred (N, C, 9, P') vectors, any float dtype."""
  pooled = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1),
                                 (1, 3, 3, 1),
                                 ((0, 0), (1, 1), (1, 1), (0, 0))) / 9.0
  n, h, w, c = pooled.shape
  v = jnp.stack([pooled[:, a:a + h - 2, b:b + w - 2, :]
                 for a in range(3) for b in range(3)], axis=-1)
  v = v.reshape(n, -1, c, 9).transpose(0, 2, 3, 1)
  return v - v.mean(-1, keepdims=True)


def literal_rmi(logits, labels, num_classes, eps=5e-4):
  """The official formula as written (general inverse, then subtract).

  Runs in the dtype of `logits`: float64 under x64 gives the gradient
  reference; float32 shows why docs/method.md D6 exists.
  """
  z = logits
  dt = z.dtype
  y = jax.nn.one_hot(labels, num_classes, dtype=dt)
  bce = jnp.sum(jnp.maximum(z, 0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z))))
  bce = bce / (labels.size + 1)
  ym = _jnp_pool_vectors(y)
  pm = _jnp_pool_vectors(jax.nn.sigmoid(z) + 1e-6)
  t = lambda m: jnp.swapaxes(m, -1, -2)
  mm = lambda a, b: jnp.matmul(a, b, precision='highest')
  eye = jnp.eye(9, dtype=dt)
  syp = mm(ym, t(pm))
  a_mat = mm(ym, t(ym)) - mm(mm(syp, jnp.linalg.inv(mm(pm, t(pm)) + eps * eye)),
                             t(syp))
  chol = jnp.linalg.cholesky(a_mat + eps * eye)
  per = jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1) + 1e-8).sum(-1)
  return 0.5 * bce + 0.5 * per.mean(0).sum() / 9.0


# ---------------------------------------------------------------------------
# CE and MSE.


def test_cross_entropy_matches_numpy():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(2, 5, 7, 3)).astype(np.float32) * 3
  m = rng.integers(0, 3, size=(2, 5, 7)).astype(np.int32)
  got = losses.cross_entropy(jnp.asarray(z), jnp.asarray(m))
  assert got.dtype == jnp.float32 and got.shape == ()
  np.testing.assert_allclose(float(got), np_cross_entropy(z, m), rtol=1e-6)


def test_cross_entropy_bf16_input_computes_in_float32():
  rng = np.random.default_rng(1)
  z = jnp.asarray(rng.normal(size=(1, 4, 4, 2)), jnp.bfloat16)
  m = jnp.asarray(rng.integers(0, 2, size=(1, 4, 4)), jnp.int32)
  got = losses.cross_entropy(z, m)
  assert got.dtype == jnp.float32
  ref = np_cross_entropy(np.asarray(z.astype(jnp.float32)), np.asarray(m))
  np.testing.assert_allclose(float(got), ref, rtol=1e-6)


def test_cross_entropy_rejects_bad_shapes_and_float_labels():
  z = jnp.zeros((1, 4, 4, 2))
  with pytest.raises(ValueError, match='labels shape'):
    losses.cross_entropy(z, jnp.zeros((1, 8, 8), jnp.int32))
  with pytest.raises(ValueError, match='integer'):
    losses.cross_entropy(z, jnp.zeros((1, 4, 4), jnp.float32))


def test_mse_matches_numpy_and_rejects_broadcasting():
  rng = np.random.default_rng(2)
  a = rng.uniform(-1, 1, size=(2, 6, 5, 3)).astype(np.float32)
  b = rng.uniform(-1, 1, size=(2, 6, 5, 3)).astype(np.float32)
  got = losses.mse(jnp.asarray(a), jnp.asarray(b))
  ref = np.mean((a.astype(np.float64) - b)**2)
  np.testing.assert_allclose(float(got), ref, rtol=1e-6)
  with pytest.raises(ValueError, match='target shape'):
    losses.mse(jnp.asarray(a), jnp.asarray(b[:, :, :, :1]))


# ---------------------------------------------------------------------------
# SSIM.

# data_range is traced, so one compile per shape.
_ssim_jit = jax.jit(losses.ssim)


@pytest.mark.parametrize('shape', [(2, 23, 31, 3), (1, 40, 17, 1),
                                   (2, 16, 16, 3)])
@pytest.mark.parametrize('data_range', [1.0, 2.0])
def test_ssim_random_matches_numpy(shape, data_range):
  rng = np.random.default_rng(hash((shape, data_range)) % 2**32)
  x = rng.uniform(-1, 1, size=shape).astype(np.float32)
  # A correlated partner, so SSIM is far from both 0 and 1.
  y = np.clip(x + 0.3 * rng.normal(size=shape), -1, 1).astype(np.float32)
  got = _ssim_jit(jnp.asarray(x), jnp.asarray(y), data_range=data_range)
  ref = np_ssim(x, y, data_range=data_range)
  assert 0.05 < ref < 0.95
  np.testing.assert_allclose(float(got), ref, rtol=0, atol=2e-6)


@pytest.mark.parametrize('data_range', [1.0, 2.0])
def test_ssim_identical_is_one(data_range):
  x = np.random.default_rng(3).uniform(-1, 1, size=(2, 20, 13, 3))
  xj = jnp.asarray(x, jnp.float32)
  np.testing.assert_allclose(
      float(_ssim_jit(xj, xj, data_range=data_range)), 1.0, atol=1e-6)


def test_ssim_data_range_changes_constants():
  rng = np.random.default_rng(4)
  x = rng.uniform(-1, 1, size=(1, 16, 16, 3)).astype(np.float32)
  y = rng.uniform(-1, 1, size=(1, 16, 16, 3)).astype(np.float32)
  s1 = float(_ssim_jit(jnp.asarray(x), jnp.asarray(y), data_range=1.0))
  s2 = float(_ssim_jit(jnp.asarray(x), jnp.asarray(y), data_range=2.0))
  assert abs(s1 - s2) > 1e-3  # C1, C2 scale with data_range**2.
  np.testing.assert_allclose(s2, np_ssim(x, y, data_range=2.0), atol=2e-6)


def test_ssim_rejects_small_images():
  x = jnp.zeros((1, 10, 30, 3))
  with pytest.raises(ValueError, match='win_size'):
    losses.ssim(x, x)


# ---------------------------------------------------------------------------
# RMI.


def test_avg_pool_count_include_pad():
  got = np.asarray(losses._avg_pool(jnp.ones((1, 7, 7, 1)), 3))[0, :, :, 0]
  e, c = 6 / 9, 4 / 9
  np.testing.assert_allclose(got, [[c, e, c], [e, 1, e], [c, e, c]],
                             rtol=1e-6)
  for h, w in [(64, 70), (128, 128), (512, 512)]:
    shape = losses._avg_pool(jnp.zeros((1, h, w, 2)), 3).shape
    assert shape == (1, (h - 1) // 3 + 1, (w - 1) // 3 + 1, 2)
  assert losses._avg_pool(jnp.zeros((1, 512, 512, 1)), 3).shape[1] == 171
  x = np.random.default_rng(5).uniform(size=(2, 64, 70, 2))
  np.testing.assert_allclose(
      np.asarray(losses._avg_pool(jnp.asarray(x, jnp.float32), 3)),
      np_avg_pool3(x), rtol=1e-6)


def _rmi_eval_fn(z, m, num_classes):
  bce, rmi = losses._rmi_terms(z, m, num_classes, 3, 3, 5e-4)
  loss, grad = jax.value_and_grad(losses.rmi_loss)(z, m, num_classes)
  return bce, rmi, loss, grad


# One compile per shape gives both halves, the loss and its gradient.
_rmi_eval = jax.jit(_rmi_eval_fn, static_argnums=2)


@pytest.mark.parametrize('n,h,w,num_classes', [(2, 64, 64, 2), (2, 64, 70, 3),
                                               (1, 128, 128, 3)])
def test_rmi_matches_float64_reference(n, h, w, num_classes):
  rng = np.random.default_rng(h * w + num_classes)
  m = _masks(rng, n, h, w, num_classes)
  for kind in ['rand', 'good', 'near', 'perfect']:
    z = _logits(rng, m, num_classes, kind)
    ref_bce, ref_rmi = np_rmi_parts(z, m, num_classes)
    bce, rmi, loss, grad = _rmi_eval(jnp.asarray(z), jnp.asarray(m),
                                     num_classes)
    np.testing.assert_allclose(float(bce), ref_bce, rtol=1e-5, err_msg=kind)
    np.testing.assert_allclose(float(rmi), ref_rmi, rtol=1e-4, err_msg=kind)
    assert loss.dtype == jnp.float32 and loss.shape == ()
    np.testing.assert_allclose(float(loss), 0.5 * ref_bce + 0.5 * ref_rmi,
                               rtol=1e-3, err_msg=kind)
    assert grad.shape == z.shape and grad.dtype == jnp.float32
    assert np.isfinite(np.asarray(grad)).all(), kind


def test_rmi_near_perfect_at_hr512():
  # The regime where an unrefined float32 solve was off by ~1e-2.
  rng = np.random.default_rng(512)
  m = _masks(rng, 2, 512, 512, 3)
  for kind in ['near', 'perfect']:
    z = _logits(rng, m, 3, kind)
    _, _, loss, grad = _rmi_eval(jnp.asarray(z), jnp.asarray(m), 3)
    np.testing.assert_allclose(float(loss), np_rmi(z, m, 3), rtol=1e-4,
                               err_msg=kind)
    assert np.isfinite(np.asarray(grad)).all(), kind


def test_rmi_perfect_value_is_the_epsilon_floor():
  # Perfect prediction with full-rank Σ_Y: A -> ε I, so A + εI = 2ε I and
  # rmi per (n, c) = 9/2 log(2ε); each class contributes that / 9.
  rng = np.random.default_rng(6)
  m = _masks(rng, 2, 64, 64, 2)
  z = _logits(rng, m, 2, 'perfect')
  _, rmi, _, _ = _rmi_eval(jnp.asarray(z), jnp.asarray(m), 2)
  np.testing.assert_allclose(float(rmi), 2 * 0.5 * np.log(2 * 5e-4),
                             rtol=1e-3)


def test_rmi_ignores_labels_out_of_range():
  rng = np.random.default_rng(7)
  m = _masks(rng, 2, 64, 64, 2)
  m[0, :10, :] = 255
  z = _logits(rng, np.where(m == 255, 0, m), 2, 'good')
  _, _, loss, _ = _rmi_eval(jnp.asarray(z), jnp.asarray(m), 2)
  np.testing.assert_allclose(float(loss), np_rmi(z, m, 2), rtol=1e-4)


def test_rmi_gradient_matches_float64_literal():
  rng = np.random.default_rng(8)
  m = _masks(rng, 2, 64, 70, 3)
  mj = jnp.asarray(m)
  with _x64():
    ref_fn = jax.jit(jax.value_and_grad(literal_rmi), static_argnums=2)
  # The near-perfect gradient is limited by float32 sigmoid near 1, whose
  # rounding is a ~1e-3 relative change of 1 - p.
  for kind, tol in [('rand', 1e-4), ('good', 1e-4), ('near', 1e-2)]:
    z = _logits(rng, m, 3, kind)
    with _x64():
      ref_val, ref_grad = ref_fn(jnp.asarray(z, jnp.float64), mj, 3)
      ref_val, ref_grad = float(ref_val), np.asarray(ref_grad)
    assert ref_grad.dtype == np.float64
    # The x64 JAX reference is itself pinned to the NumPy one.
    np.testing.assert_allclose(ref_val, np_rmi(z, m, 3), rtol=1e-10)
    _, _, _, grad = _rmi_eval(jnp.asarray(z), mj, 3)
    grad = np.asarray(grad, np.float64)
    assert np.isfinite(grad).all() and np.abs(ref_grad).max() > 0
    rel = np.linalg.norm(grad - ref_grad) / np.linalg.norm(ref_grad)
    assert rel < tol, (kind, rel)


def test_literal_float32_rmi_fails_on_perfect_predictions():
  """Why docs/method.md D6 exists: the literal float32 A cancels to garbage."""
  rng = np.random.default_rng(9)
  m = _masks(rng, 2, 512, 512, 3)
  mj = jnp.asarray(m)
  z_rand = jnp.asarray(_logits(rng, m, 3, 'rand'))
  z_perf = jnp.asarray(_logits(rng, m, 3, 'perfect'))
  literal = jax.jit(literal_rmi, static_argnums=2)
  # Fine on random predictions...
  np.testing.assert_allclose(float(literal(z_rand, mj, 3)),
                             np_rmi(np.asarray(z_rand), m, 3), rtol=1e-3)
  # ...NaN once predictions are perfect, where the stable route is exact.
  assert not np.isfinite(float(literal(z_perf, mj, 3)))
  _, _, ours, grad = _rmi_eval(z_perf, mj, 3)
  np.testing.assert_allclose(float(ours), np_rmi(np.asarray(z_perf), m, 3),
                             rtol=1e-4)
  assert np.isfinite(np.asarray(grad)).all()


def test_rmi_rejects_bad_inputs():
  z = jnp.zeros((1, 16, 16, 2))
  m = jnp.zeros((1, 16, 16), jnp.int32)
  with pytest.raises(ValueError, match=r'model\.num_classes.*D7'):
    losses.rmi_loss(z[..., :1], m, 1)
  with pytest.raises(ValueError, match='num_classes = 3'):
    losses.rmi_loss(z, m, 3)
  with pytest.raises(ValueError, match='radius'):
    losses.rmi_loss(z[:, :6, :6], m[:, :6, :6], 2)


# ---------------------------------------------------------------------------
# total_loss.


class LossCfg(NamedTuple):
  """The config's `loss` block as a pytree, so weights are traced under jit."""
  ce_weight: float
  mse_weight: float
  ssim_weight: float
  rmi_weight: float
  ssim_data_range: float


def _cfg(**overrides):
  loss = default.get_config().loss
  return LossCfg(**{k: overrides.get(k, loss[k]) for k in LossCfg._fields})


# num_classes static; outputs (None leaves included), batch and cfg traced.
_total = jax.jit(losses.total_loss, static_argnums=3)


def _example(rng, n=2, hr=32, num_classes=2, dtype=jnp.float32):
  m = _masks(rng, n, hr, hr, num_classes)
  hr_img = rng.uniform(-1, 1, size=(n, hr, hr, 3)).astype(np.float32)
  outs = Outputs(
      out=jnp.asarray(_logits(rng, m, num_classes, 'good'), dtype),
      sr=jnp.asarray(hr_img + 0.1 * rng.normal(size=hr_img.shape), dtype),
      fusion_seg=jnp.asarray(_logits(rng, m, num_classes, 'rand'), dtype),
      fusion_sr=jnp.asarray(hr_img + 0.2 * rng.normal(size=hr_img.shape),
                            dtype))
  batch = {'hr': jnp.asarray(hr_img), 'mask': jnp.asarray(m, jnp.int32)}
  return outs, batch


def _np_parts(outs, batch, num_classes, data_range):
  f = lambda a: np.asarray(jnp.asarray(a, jnp.float32), np.float64)
  hr, m = f(batch['hr']), np.asarray(batch['mask'])
  return {
      'ce': np_cross_entropy(f(outs.out), m),
      'mse': np.mean((f(outs.sr) - hr)**2),
      'ssim': 1.0 - np_ssim(f(outs.fusion_sr), hr, data_range=data_range),
      'rmi': np_rmi(f(outs.fusion_seg), m, num_classes),
  }


def test_total_loss_all_terms_and_weights():
  rng = np.random.default_rng(11)
  outs, batch = _example(rng)
  cfg = _cfg()
  assert cfg == LossCfg(1.0, 1.0, 1.0, 1.0, 1.0)  # Decisions 9.5 and 9.8.
  loss, parts = _total(outs, batch, cfg, 2)
  ref = _np_parts(outs, batch, 2, 1.0)
  assert set(parts) == {'ce', 'mse', 'ssim', 'rmi'}
  for k in ref:
    assert parts[k].dtype == jnp.float32 and parts[k].shape == ()
    np.testing.assert_allclose(float(parts[k]), ref[k], rtol=1e-4, err_msg=k)
  assert loss.dtype == jnp.float32 and loss.shape == ()
  np.testing.assert_allclose(float(loss), sum(ref.values()), rtol=1e-4)

  # Weights apply per term; a zero weight still reports its part.
  cfg = _cfg(ce_weight=0.5, mse_weight=2.0, ssim_weight=0.0, rmi_weight=0.25,
             ssim_data_range=2.0)
  loss, parts = _total(outs, batch, cfg, 2)
  ref = _np_parts(outs, batch, 2, 2.0)
  assert set(parts) == {'ce', 'mse', 'ssim', 'rmi'}
  np.testing.assert_allclose(float(parts['ssim']), ref['ssim'], rtol=1e-4)
  assert float(parts['ssim']) > 0.1
  want = 0.5 * ref['ce'] + 2.0 * ref['mse'] + 0.25 * ref['rmi']
  np.testing.assert_allclose(float(loss), want, rtol=1e-4)


def test_total_loss_none_terms_are_absent():
  rng = np.random.default_rng(13)
  outs, batch = _example(rng)
  ref = _np_parts(outs, batch, 2, 1.0)
  dual = outs._replace(fusion_seg=None, fusion_sr=None)
  loss, parts = _total(dual, batch, _cfg(), 2)
  assert set(parts) == {'ce', 'mse'}
  np.testing.assert_allclose(float(loss), ref['ce'] + ref['mse'], rtol=1e-5)
  ssim_only = Outputs(None, None, None, outs.fusion_sr)
  loss, parts = _total(ssim_only, batch, _cfg(), 2)
  assert set(parts) == {'ssim'}
  np.testing.assert_allclose(float(loss), ref['ssim'], rtol=1e-4)
  loss, parts = _total(Outputs(None, None, None, None), batch, _cfg(), 2)
  assert parts == {} and float(loss) == 0.0


def test_total_loss_seg_only_at_lr():
  # Seg-only baseline: out and mask at LR, hr still at HR in the batch.
  rng = np.random.default_rng(14)
  _, batch = _example(rng, hr=32)
  m_lr = _masks(rng, 2, 16, 16, 2)
  z_lr = _logits(rng, m_lr, 2, 'good')
  batch = dict(batch, mask=jnp.asarray(m_lr))
  outs = Outputs(out=jnp.asarray(z_lr), sr=None, fusion_seg=None,
                 fusion_sr=None)
  loss, parts = _total(outs, batch, _cfg(), 2)
  assert set(parts) == {'ce'}
  np.testing.assert_allclose(float(loss), np_cross_entropy(z_lr, m_lr),
                             rtol=1e-5)


def test_total_loss_bf16_outputs_give_float32_loss():
  rng = np.random.default_rng(15)
  outs, batch = _example(rng, dtype=jnp.bfloat16)
  loss, parts = _total(outs, batch, _cfg(), 2)
  assert loss.dtype == jnp.float32
  assert all(v.dtype == jnp.float32 for v in parts.values())
  ref = _np_parts(outs, batch, 2, 1.0)
  np.testing.assert_allclose(float(loss), sum(ref.values()), rtol=1e-4)


def test_total_loss_rejects_one_class_and_missing_keys():
  rng = np.random.default_rng(16)
  outs, batch = _example(rng)
  with pytest.raises(ValueError, match=r'model\.num_classes.*D7'):
    losses.total_loss(outs, batch, _cfg(), 1)
  with pytest.raises(ValueError, match="'hr'"):
    losses.total_loss(outs, {'mask': batch['mask']}, _cfg(), 2)


def test_total_loss_jit_grad_with_config_dict():
  # The real ConfigDict, closed over, as train code will use it.
  rng = np.random.default_rng(17)
  outs, batch = _example(rng)
  cfg = default.get_config().loss

  def f(o, b):
    return losses.total_loss(o, b, cfg, 2)

  (loss, parts), grads = jax.jit(jax.value_and_grad(f, has_aux=True))(
      outs, batch)
  ref = _np_parts(outs, batch, 2, cfg.ssim_data_range)
  np.testing.assert_allclose(float(loss), sum(ref.values()), rtol=1e-4)
  for k in ref:
    np.testing.assert_allclose(float(parts[k]), ref[k], rtol=1e-4, err_msg=k)
  for name in Outputs._fields:
    g = np.asarray(getattr(grads, name))
    assert g.shape == getattr(outs, name).shape
    assert np.isfinite(g).all() and np.abs(g).max() > 0, name
