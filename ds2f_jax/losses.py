"""DS2F training losses as implemented in the official code (docs/method.md §Losses).

  L = CE(out, mask) + MSE(sr, hr) + [1 - SSIM(fusion_sr, hr)]
      + RMI(fusion_seg, mask)

All tensors are NHWC. Every loss casts its inputs to float32 first, so a
bfloat16 model still gets float32 losses, and nothing here needs float64: RMI
runs on the accelerator with a cancellation-free float32 form (docs/method.md D6).
"""

from typing import Any, Mapping

import jax
import jax.numpy as jnp
from jax import lax

from ds2f_jax import sr_quality

# Covariance products must not drop to bf16 passes (TPU default precision).
_HIGHEST = lax.Precision.HIGHEST
# Added to the sigmoid probabilities (docs/method.md §RMI, step 3).
_PROB_FLOOR = 1e-6
# Added to the Cholesky diagonal before the log (docs/method.md §RMI, step 8).
_CHOL_FLOOR = 1e-8


def _check_num_classes(num_classes: int) -> None:
  if num_classes == 1:
    raise ValueError(
        'model.num_classes = 1 is not supported: binary tasks use '
        'num_classes = 2 with softmax CE, and RMI needs one-hot labels '
        '(docs/method.md D7).')
  if num_classes < 1:
    raise ValueError(f'model.num_classes must be >= 2, got {num_classes}.')


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Softmax CE averaged over every pixel and the batch (PT defaults).

  Shape-generic: logits (..., C) and integer labels (...), so it serves HR
  training and the LR seg-only baseline alike.
  """
  if logits.shape[:-1] != labels.shape:
    raise ValueError(f'cross_entropy: logits shape {logits.shape} does not '
                     f'match labels shape {labels.shape} plus a class axis.')
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f'cross_entropy: labels must be integer, got '
                     f'{labels.dtype}.')
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  picked = jnp.take_along_axis(
      logp, labels.astype(jnp.int32)[..., None], axis=-1)
  return -jnp.mean(picked)


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Mean squared error over every element; shapes must match exactly."""
  if pred.shape != target.shape:
    raise ValueError(f'mse: pred shape {pred.shape} != target shape '
                     f'{target.shape} (no broadcasting, it hides bugs).')
  diff = pred.astype(jnp.float32) - target.astype(jnp.float32)
  return jnp.mean(jnp.square(diff))


def ssim(x: jax.Array,
         y: jax.Array,
         *,
         data_range: float = 1.0,
         win_size: int = 11,
         sigma: float = 1.5,
         k1: float = 0.01,
         k2: float = 0.03) -> jax.Array:
  """SSIM of a batch (N, H, W, C) with pytorch_msssim semantics: the mean over
  images of `sr_quality.ssim`, the one SSIM the metric uses too."""
  if x.shape != y.shape or x.ndim != 4:
    raise ValueError(f'ssim: inputs must both be (N, H, W, C), got {x.shape} '
                     f'and {y.shape}.')
  return jnp.mean(sr_quality.ssim(x, y, data_range=data_range, win_size=win_size, sigma=sigma,
                                  k1=k1, k2=k2))


def _avg_pool(x: jax.Array, pool: int) -> jax.Array:
  """PT avg_pool2d(k=s=pool, pad=pool//2, count_include_pad=True), NHWC."""
  if pool == 1:
    return x
  pad = pool // 2
  summed = lax.reduce_window(x, 0.0, lax.add, (1, pool, pool, 1),
                             (1, pool, pool, 1),
                             ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  return summed / float(pool * pool)


def _shifted_vectors(x: jax.Array, radius: int) -> jax.Array:
  """(N, H, W, C) -> (N, C, radius**2, P'): one row per shifted crop."""
  n, h, w, c = x.shape
  hc, wc = h - radius + 1, w - radius + 1
  rows = [
      x[:, dy:dy + hc, dx:dx + wc, :].reshape(n, hc * wc, c)
      for dy in range(radius)
      for dx in range(radius)
  ]
  return jnp.stack(rows, axis=-1).transpose(0, 2, 3, 1)


def _gram(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.einsum('...ip,...jp->...ij', a, b, precision=_HIGHEST)


def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.einsum('...ij,...jp->...ip', a, b, precision=_HIGHEST)


def _solve_right(s: jax.Array, rhs: jax.Array) -> jax.Array:
  """rhs S⁻¹ for a symmetric S, by LU solve rather than an inverse."""
  return jnp.swapaxes(jnp.linalg.solve(s, jnp.swapaxes(rhs, -1, -2)), -1, -2)


def _rmi_terms(logits: jax.Array, labels: jax.Array, num_classes: int,
               radius: int, pool: int, eps: float):
  """Returns (bce, rmi), the two unweighted halves of the RMI loss."""
  _check_num_classes(num_classes)
  if logits.ndim != 4 or logits.shape[-1] != num_classes:
    raise ValueError(f'rmi_loss: logits must be (N, H, W, {num_classes}) '
                     f'for model.num_classes = {num_classes}, got '
                     f'{logits.shape}.')
  if logits.shape[:-1] != labels.shape:
    raise ValueError(f'rmi_loss: logits shape {logits.shape} does not match '
                     f'labels shape {labels.shape}.')
  pad = pool // 2
  pooled_hw = [(n + 2 * pad - pool) // pool + 1 for n in labels.shape[1:]]
  if min(pooled_hw) < radius:
    raise ValueError(f'rmi_loss: spatial size {labels.shape[1:]} pools to '
                     f'{pooled_hw}, smaller than radius {radius}.')
  z = logits.astype(jnp.float32)
  valid = (labels >= 0) & (labels < num_classes)
  valid_f = valid.astype(jnp.float32)[..., None]
  y = jax.nn.one_hot(jnp.where(valid, labels, 0), num_classes,
                     dtype=jnp.float32) * valid_f
  y = lax.stop_gradient(y)

  # Per-class binary CE with logits, summed over classes, / (pixels + 1).
  bce_map = jnp.maximum(z, 0.0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z)))
  bce = jnp.sum(bce_map * valid_f) / (jnp.sum(valid_f) + 1.0)

  p = jax.nn.sigmoid(z) * valid_f + _PROB_FLOOR
  yv = _shifted_vectors(_avg_pool(y, pool), radius)
  pv = _shifted_vectors(_avg_pool(p, pool), radius)
  yv = yv - jnp.mean(yv, axis=-1, keepdims=True)
  pv = pv - jnp.mean(pv, axis=-1, keepdims=True)

  # A = Σ_Y - Σ_YP S⁻¹ Σ_PY (S = Σ_P + εI) cancels every digit in float32
  # when P ≈ Y. The same A as a sum of two Gram matrices has no subtraction
  # of large terms: A = R Rᵀ + ε B Bᵀ with B = Σ_YP S⁻¹ and R = Y - B P.
  # A is stationary in B, so an error in B moves A only to second order (as
  # δ S δᵀ); since S is ~1e4 against ε at HR 512 this is still visible, hence
  # the refinement step below.
  d = radius * radius
  eye = jnp.eye(d, dtype=jnp.float32)
  s = _gram(pv, pv) + eps * eye
  b = _solve_right(s, _gram(yv, pv))
  r = yv - _matmul(b, pv)
  # One refinement step: the normal-equation residual Σ_YP - B S, taken as
  # R Pᵀ - ε B, is free of cancellation. Without it the float32 result was
  # off by up to 1e-2 (relative) on near-perfect predictions at HR 512; with
  # it, by at most ~1e-6.
  b = b + _solve_right(s, _gram(r, pv) - eps * b)
  r = yv - _matmul(b, pv)
  a = _gram(r, r) + eps * _gram(b, b)
  chol = jnp.linalg.cholesky(a + eps * eye)
  # 0.5 * logdet = sum(log(diag(L))): the official 0.5 and 2 cancel.
  diag = jnp.diagonal(chol, axis1=-2, axis2=-1)
  rmi_nc = jnp.sum(jnp.log(diag + _CHOL_FLOOR), axis=-1)  # (N, C)
  rmi = jnp.sum(jnp.mean(rmi_nc, axis=0)) / d
  return bce, rmi


def rmi_loss(logits: jax.Array,
             labels: jax.Array,
             num_classes: int,
             *,
             radius: int = 3,
             pool: int = 3,
             lambda_: float = 0.5,
             eps: float = 5e-4) -> jax.Array:
  """RMI proxy loss (docs/method.md §RMI): lambda_ * BCE + (1 - lambda_) * RMI.

  logits (N, H, W, C) with C = num_classes, integer labels (N, H, W); labels
  outside [0, C) are ignored. Gradients reach the logits only.
  """
  bce, rmi = _rmi_terms(logits, labels, num_classes, radius, pool, eps)
  return lambda_ * bce + (1.0 - lambda_) * rmi


def _batch_item(batch: Mapping[str, Any], key: str, user: str) -> jax.Array:
  if key not in batch:
    raise ValueError(f"total_loss: batch has no '{key}', needed by {user}.")
  return batch[key]


def total_loss(outputs: Any, batch: Mapping[str, Any], loss_cfg: Any,
               num_classes: int):
  """Weighted DS2F loss and its unweighted parts (docs/method.md §Losses, D8).

  Args:
    outputs: has `.out, .sr, .fusion_seg, .fusion_sr`; None drops that term
      (ablation variants).
    batch: 'hr' (N, H, W, 3) in [-1, 1] and 'mask' (N, H, W) integer labels.
    loss_cfg: `ce_weight, mse_weight, ssim_weight, rmi_weight,
      ssim_data_range` (config `loss`).
    num_classes: model.num_classes, >= 2.

  Returns:
    (loss, parts): parts holds each present term unweighted, under 'ce',
    'mse', 'ssim' (the 1 - SSIM value) and 'rmi'; a weight of 0 still reports.
  """
  _check_num_classes(num_classes)
  parts = {}
  loss = jnp.zeros((), jnp.float32)
  if outputs.out is not None:
    parts['ce'] = cross_entropy(outputs.out,
                                _batch_item(batch, 'mask', 'outputs.out'))
    loss = loss + loss_cfg.ce_weight * parts['ce']
  if outputs.sr is not None:
    parts['mse'] = mse(outputs.sr, _batch_item(batch, 'hr', 'outputs.sr'))
    loss = loss + loss_cfg.mse_weight * parts['mse']
  if outputs.fusion_sr is not None:
    hr = _batch_item(batch, 'hr', 'outputs.fusion_sr')
    parts['ssim'] = 1.0 - ssim(
        outputs.fusion_sr, hr, data_range=loss_cfg.ssim_data_range)
    loss = loss + loss_cfg.ssim_weight * parts['ssim']
  if outputs.fusion_seg is not None:
    parts['rmi'] = rmi_loss(outputs.fusion_seg,
                            _batch_item(batch, 'mask', 'outputs.fusion_seg'),
                            num_classes)
    loss = loss + loss_cfg.rmi_weight * parts['rmi']
  return loss, parts
