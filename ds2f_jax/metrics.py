"""Segmentation, AUC and SR-quality metrics shared by validation and eval.

Two halves, so that one accumulation serves every mode:

* Device side (jit-able, int32/float32 only, no scatter): `confusion_matrix`,
  `batched_confusion_matrix`, `score_histogram`, `psnr`, `ssim_metric`,
  `nearest_resize_probs`. Call these inside the jitted eval step.
* Host side (NumPy, int64 counts, float64 arithmetic): `summarize_confusion`,
  `per_image_summary`, the exact AUCs (`roc_auc`, `pr_auc`,
  `average_precision`), the histogram AUCs, and the accumulators
  `ConfusionAccumulator` / `HistogramAccumulator` that add per-batch device
  results in int64 without a device sync per batch.

The accumulators are plain Python rather than `clu.metrics` classes because
the GPU machine lacks clu (engineering notes section 1); int64 totals on the
host also cannot overflow on large test sets (30 HRF images are 2.5e8 px).

Conventions (spec section 5.3): rows of a confusion matrix are the ground
truth, columns the prediction. A ratio whose denominator is zero is NaN for
that class (e.g. Se when a class is absent from the ground truth, precision
when it is never predicted, Sp when every pixel is foreground, MCC when any
marginal is empty); means over classes or images skip NaNs. Dice and IoU are
0, not NaN, for an empty prediction with non-empty ground truth (and vice
versa); they are NaN only when both are empty.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ds2f_jax import imaging

# Keys of `summarize_confusion`, in report order.
METRIC_NAMES = ('dice', 'iou', 'se', 'sp', 'acc', 'precision', 'mcc', 'bm')

# Histogram resolution defaults (see `score_bins`).
DEFAULT_MANTISSA_BITS = 12
DEFAULT_OCTAVES = 40

# Device arrays kept before the accumulators copy them to the host.
_FLUSH_EVERY = 8


# ----------------------------------------------------------------------------
# Confusion matrices (device side).


def confusion_matrix(labels, preds, num_classes: int, weights=None):
  """(C, C) int32 counts; rows = ground truth, columns = prediction.

  Scatter-free: each pixel's cell index `label * C + pred` is compared with
  all C*C cells and the comparison is summed, which XLA fuses into one
  reduction (no atomics; exact while one call sees < 2^31 pixels). Pixels
  whose label or prediction is outside [0, C) (e.g. a 255 "void" label) are
  ignored, as are pixels with `weights <= 0` (a FOV mask or padded batch
  examples). `num_classes` must be static under `jax.jit`.
  """
  num_classes = _check_num_classes(num_classes)
  labels = jnp.asarray(labels)
  preds = jnp.asarray(preds)
  if labels.shape != preds.shape:
    raise ValueError(f'confusion_matrix: labels shape {labels.shape} != '
                     f'preds shape {preds.shape}')
  labels = labels.astype(jnp.int32)
  preds = preds.astype(jnp.int32)
  valid = ((labels >= 0) & (labels < num_classes) &
           (preds >= 0) & (preds < num_classes))
  if weights is not None:
    weights = jnp.asarray(weights)
    if weights.shape != labels.shape:
      raise ValueError(f'confusion_matrix: weights shape {weights.shape} != '
                       f'labels shape {labels.shape}')
    valid = valid & (weights > 0)
  cell = jnp.where(valid, labels * num_classes + preds, -1).reshape(-1)
  cells = jnp.arange(num_classes * num_classes, dtype=jnp.int32)
  counts = jnp.sum(cell[:, None] == cells[None, :], axis=0, dtype=jnp.int32)
  return counts.reshape(num_classes, num_classes)


def batched_confusion_matrix(labels, preds, num_classes: int, weights=None):
  """(N, C, C) int32: one confusion matrix per example of the leading axis."""
  if weights is None:
    return jax.vmap(lambda l, p: confusion_matrix(l, p, num_classes))(
        labels, preds)
  return jax.vmap(lambda l, p, w: confusion_matrix(l, p, num_classes, w))(
      labels, preds, weights)


def _check_num_classes(num_classes) -> int:
  if not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
    raise ValueError(f'num_classes must be a static int >= 2 (binary tasks '
                     f'use 2), got {num_classes!r}')
  return int(num_classes)


# ----------------------------------------------------------------------------
# Confusion-matrix metrics (host side, float64).


def _as_confusion(cm) -> np.ndarray:
  cm = np.asarray(cm)
  if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] < 2:
    raise ValueError(f'confusion matrix must be square (C, C) with C >= 2, '
                     f'got shape {cm.shape}')
  if np.any(cm < 0):
    raise ValueError('confusion matrix has negative counts')
  return cm.astype(np.float64)


def _ratio(num, den):
  """num / den with NaN where den == 0 (and no warning)."""
  num = np.asarray(num, np.float64)
  den = np.asarray(den, np.float64)
  out = np.full(np.broadcast(num, den).shape, np.nan)
  np.divide(num, den, out=out, where=den != 0)
  return out


def per_class_metrics(cm) -> dict[str, np.ndarray]:
  """Per-class float64 arrays of shape (C,): counts and spec 5.3 metrics."""
  m = _as_confusion(cm)
  total = m.sum()
  tp = np.diag(m)
  fp = m.sum(axis=0) - tp
  fn = m.sum(axis=1) - tp
  tn = total - tp - fp - fn
  se = _ratio(tp, tp + fn)
  sp = _ratio(tn, tn + fp)
  # The square root of each pair keeps the product far from float64 limits.
  mcc_den = np.sqrt((tp + fp) * (tp + fn)) * np.sqrt((tn + fp) * (tn + fn))
  return {
      'tp': tp, 'fp': fp, 'fn': fn, 'tn': tn,
      'precision': _ratio(tp, tp + fp),
      'acc': _ratio(tp + tn, np.full_like(tp, total)),
      'se': se,
      'sp': sp,
      'iou': _ratio(tp, tp + fp + fn),
      'dice': _ratio(2 * tp, 2 * tp + fp + fn),
      'mcc': _ratio(tp * tn - fp * fn, mcc_den),
      'bm': se + sp - 1.0,
  }


def nan_mean(values) -> float:
  """Mean of the non-NaN entries; NaN (without a warning) if there are none."""
  v = np.asarray(values, np.float64).ravel()
  v = v[~np.isnan(v)]
  return float(v.mean()) if v.size else math.nan


def nan_std(values) -> float:
  """Population std (ddof=0) of the non-NaN entries; NaN if there are none."""
  v = np.asarray(values, np.float64).ravel()
  v = v[~np.isnan(v)]
  return float(v.std()) if v.size else math.nan


def _class_names(num_classes: int, class_names) -> list[str]:
  if class_names is None:
    return [str(c) for c in range(num_classes)]
  names = [str(n) for n in class_names]
  if len(names) != num_classes:
    raise ValueError(f'class_names has {len(names)} names for a '
                     f'{num_classes}-class confusion matrix: {names}')
  return names


def summarize_confusion(cm, class_names: Sequence[str] | None = None
                        ) -> dict[str, float]:
  """Reported metrics (spec 5.3) of one confusion matrix, as Python floats.

  C == 2: the keys of `METRIC_NAMES` for class 1. C > 2: each key is the
  nan-mean over classes 1..C-1, and `'<key>/<class name>'` holds each of those
  classes (names default to the class index; `class_names` lists all C
  classes, background included).
  """
  per = per_class_metrics(cm)
  num_classes = per['tp'].shape[0]
  names = _class_names(num_classes, class_names)
  if num_classes == 2:
    return {k: float(per[k][1]) for k in METRIC_NAMES}
  out = {k: nan_mean(per[k][1:]) for k in METRIC_NAMES}
  for k in METRIC_NAMES:
    for c in range(1, num_classes):
      out[f'{k}/{names[c]}'] = float(per[k][c])
  return out


def per_image_metrics(cms, class_names: Sequence[str] | None = None
                      ) -> list[dict[str, float]]:
  """`summarize_confusion` of each (C, C) matrix of an (N, C, C) stack."""
  cms = np.asarray(cms)
  if cms.ndim != 3:
    raise ValueError(f'per-image confusion matrices must be (N, C, C), got '
                     f'shape {cms.shape}')
  return [summarize_confusion(m, class_names) for m in cms]


def per_image_summary(cms, class_names: Sequence[str] | None = None
                      ) -> dict[str, float]:
  """Mean and std over images of each per-image metric.

  Keys are `'<key>_per_image_mean'` and `'<key>_per_image_std'` for every key
  of `summarize_confusion`. Images where a metric is NaN (e.g. Dice of an
  image with no foreground in either mask) are skipped; std is the population
  std (ddof=0).
  """
  rows = per_image_metrics(cms, class_names)
  if not rows:
    raise ValueError('per_image_summary needs at least one image')
  out = {}
  for k in rows[0]:
    values = [r[k] for r in rows]
    out[f'{k}_per_image_mean'] = nan_mean(values)
    out[f'{k}_per_image_std'] = nan_std(values)
  return out


# ----------------------------------------------------------------------------
# Accumulators (host side).


class _PendingSum:
  """Sums device arrays into an int64 host total, a few batches at a time.

  Keeping the device arrays for a while lets the eval loop dispatch ahead
  instead of blocking on a device-to-host copy after every batch.
  """

  def __init__(self, shape):
    self._total = np.zeros(shape, np.int64)
    self._pending = []

  def add(self, value, what: str):
    if tuple(np.shape(value)) != self._total.shape:
      raise ValueError(f'{what}: expected shape {self._total.shape}, got '
                       f'{tuple(np.shape(value))}')
    self._pending.append(value)
    if len(self._pending) >= _FLUSH_EVERY:
      self.flush()

  def flush(self):
    if self._pending:
      for v in jax.device_get(self._pending):
        v = np.asarray(v, np.int64)
        if np.any(v < 0):
          raise ValueError('accumulated counts must be non-negative')
        self._total += v
      self._pending = []

  @property
  def total(self) -> np.ndarray:
    self.flush()
    return self._total.copy()


class ConfusionAccumulator:
  """Sums per-batch confusion matrices (any int dtype) into int64.

  acc = ConfusionAccumulator(2)
  for batch: acc.update(eval_step(...))   # a (C, C) device array
  metrics = acc.compute()                  # summarize_confusion of the total
  """

  def __init__(self, num_classes: int):
    self.num_classes = _check_num_classes(num_classes)
    self._sum = _PendingSum((self.num_classes, self.num_classes))

  def update(self, cm) -> 'ConfusionAccumulator':
    """Adds a (C, C) matrix, or an (N, C, C) stack summed over N."""
    if np.ndim(cm) == 3:
      cm = jnp.sum(jnp.asarray(cm, jnp.int32), axis=0)
    self._sum.add(cm, 'ConfusionAccumulator.update')
    return self

  @property
  def matrix(self) -> np.ndarray:
    """The int64 (C, C) total so far."""
    return self._sum.total

  def merge(self, other: 'ConfusionAccumulator') -> 'ConfusionAccumulator':
    """A new accumulator holding the sum of both (e.g. from two hosts)."""
    if other.num_classes != self.num_classes:
      raise ValueError(f'cannot merge {other.num_classes}-class into '
                       f'{self.num_classes}-class ConfusionAccumulator')
    out = ConfusionAccumulator(self.num_classes)
    out.update(self.matrix + other.matrix)
    return out

  def compute(self, class_names: Sequence[str] | None = None
              ) -> dict[str, float]:
    return summarize_confusion(self.matrix, class_names)


# ----------------------------------------------------------------------------
# AUCs from per-threshold counts (host side, float64).
#
# `pos` and `neg` hold the (weighted) number of positive / negative samples
# at each distinct score, ordered by ascending score. Every AUC below is a
# function of these counts alone, so the exact AUCs (one entry per distinct
# score) and the histogram AUCs (one per bin) share the same code.


def roc_auc_from_counts(pos, neg) -> float:
  """ROC-AUC: trapezoid over distinct thresholds, as sklearn's roc_auc_score.

  That area equals P(s_pos > s_neg) + 0.5 P(s_pos == s_neg). NaN when there
  are no positives or no negatives (sklearn raises instead).
  """
  pos = np.asarray(pos, np.float64)
  neg = np.asarray(neg, np.float64)
  n_pos, n_neg = pos.sum(), neg.sum()
  if n_pos <= 0 or n_neg <= 0:
    return math.nan
  pos_above = n_pos - np.cumsum(pos)  # Positives with a strictly higher score.
  return float(np.sum(neg * (pos_above + 0.5 * pos)) / (n_pos * n_neg))


def _pr_points(pos, neg):
  """(recall, precision) at each distinct threshold, descending threshold."""
  pos = np.asarray(pos, np.float64)
  neg = np.asarray(neg, np.float64)
  keep = (pos + neg) > 0
  tp = np.cumsum(pos[keep][::-1])
  fp = np.cumsum(neg[keep][::-1])
  if tp.size == 0 or tp[-1] <= 0:
    return None
  return tp / tp[-1], tp / (tp + fp)


def pr_auc_from_counts(pos, neg) -> float:
  """PR-AUC as the official code: trapezoid on the PR curve.

  The curve is torcheval's BinaryPrecisionRecallCurve (one point per distinct
  threshold plus the end point recall 0, precision 1), integrated with
  sklearn.metrics.auc(recall, precision). This is slightly above the step-wise
  average precision. NaN when there are no positives (torcheval would report
  0.5 there).
  """
  pts = _pr_points(pos, neg)
  if pts is None:
    return math.nan
  recall, precision = pts
  r = np.concatenate([[0.0], recall])
  p = np.concatenate([[1.0], precision])
  return float(np.sum(np.diff(r) * (p[1:] + p[:-1]) * 0.5))


def average_precision_from_counts(pos, neg) -> float:
  """Step-wise average precision, sum_k (R_k - R_{k-1}) P_k (sklearn's AP)."""
  pts = _pr_points(pos, neg)
  if pts is None:
    return math.nan
  recall, precision = pts
  return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


def _exact_counts(scores, labels, weights):
  scores = np.asarray(scores).ravel()
  labels = np.asarray(labels).ravel()
  if scores.shape != labels.shape:
    raise ValueError(f'scores has {scores.size} values but labels has '
                     f'{labels.size}')
  if np.isnan(scores).any():
    raise ValueError('scores contain NaN')
  if not np.isin(labels, (0, 1)).all():
    raise ValueError(f'labels must be 0/1 (or bool), got values '
                     f'{np.unique(labels)[:10]}')
  if weights is None:
    w = np.ones(scores.shape, np.float64)
  else:
    w = np.asarray(weights, np.float64).ravel()
    if w.shape != scores.shape:
      raise ValueError(f'weights has {w.size} values but scores has '
                       f'{scores.size}')
    if np.any(w < 0):
      raise ValueError('weights must be non-negative')
  distinct, inverse = np.unique(scores, return_inverse=True)
  is_pos = labels.astype(bool)
  pos = np.bincount(inverse, weights=w * is_pos, minlength=distinct.size)
  neg = np.bincount(inverse, weights=w * ~is_pos, minlength=distinct.size)
  return pos, neg


def roc_auc(scores, labels, weights=None) -> float:
  """Exact ROC-AUC from sorted scores, ties as sklearn (roc_auc_from_counts).

  `labels` are 0/1, `weights` non-negative sample weights (a FOV mask).
  """
  return roc_auc_from_counts(*_exact_counts(scores, labels, weights))


def pr_auc(scores, labels, weights=None) -> float:
  """Exact PR-AUC (trapezoid, as the official code); see pr_auc_from_counts."""
  return pr_auc_from_counts(*_exact_counts(scores, labels, weights))


def average_precision(scores, labels, weights=None) -> float:
  """Exact step-wise average precision (sklearn's average_precision_score)."""
  return average_precision_from_counts(*_exact_counts(scores, labels, weights))


# ----------------------------------------------------------------------------
# Streaming score histograms (device side) for AUCs over whole test sets.


def num_score_bins(mantissa_bits: int = DEFAULT_MANTISSA_BITS,
                   octaves: int = DEFAULT_OCTAVES) -> int:
  """Number of bins of `score_bins` (327683 with the defaults)."""
  return 2 * octaves * (1 << mantissa_bits) + 3


def score_bins(scores, mantissa_bits: int = DEFAULT_MANTISSA_BITS,
               octaves: int = DEFAULT_OCTAVES):
  """Monotone int32 bin index of probabilities in [0, 1].

  Softmax probabilities crowd near 0 and 1, where uniform bins would merge
  most pixels. The bins are therefore uniform in the float32 exponent and
  `mantissa_bits` leading mantissa bits of d = min(p, 1 - p) (1 - p is exact
  in float32 for p >= 0.5): a relative resolution of 2^-mantissa_bits of the
  distance to 0 or 1 (about 6e-5 absolute near 0.5), i.e. nearly uniform in
  logit. d below 2^-(octaves+1) (4.5e-13 by default) shares one bin per side;
  on the upper side that only merges p == 1.0, a genuine float32 tie. Scores
  outside [0, 1] are clipped.
  """
  if not 1 <= mantissa_bits <= 23 or not 1 <= octaves <= 125:
    raise ValueError(f'score_bins: need 1 <= mantissa_bits <= 23 and '
                     f'1 <= octaves <= 125, got {mantissa_bits}, {octaves}')
  p = jnp.clip(jnp.asarray(scores, jnp.float32), 0.0, 1.0)
  upper = p > 0.5
  d = jnp.where(upper, 1.0 - p, p)
  bits = jax.lax.bitcast_convert_type(d, jnp.int32)
  lowest = (126 - octaves) << 23  # float32 bits of 2^-(octaves + 1).
  half = octaves * (1 << mantissa_bits) + 2  # Bins per side, 0.5 included.
  h = jnp.clip(((bits - lowest) >> (23 - mantissa_bits)) + 1, 0, half - 1)
  return jnp.where(upper, 2 * half - 2 - h, h).astype(jnp.int32)


def score_histogram(scores, labels, weights=None, *,
                    mantissa_bits: int = DEFAULT_MANTISSA_BITS,
                    octaves: int = DEFAULT_OCTAVES,
                    per_example: bool = False):
  """(2, B) int32 counts of negatives (row 0) and positives (row 1) per bin.

  `scores` are foreground probabilities, `labels` 0/1 (anything non-zero is
  positive), `weights` a mask (pixels with weight <= 0 and NaN scores are
  left out). Scatter-free: the keys are sorted and counted with a binary
  search per bin. `per_example=True` sorts each example of the leading axis
  separately and sums the counts, which suits a batch sharded over devices
  (one global sort would gather it); it costs one search per bin and
  example, so keep it for a few large images per batch.
  """
  scores = jnp.asarray(scores)
  labels = jnp.asarray(labels)
  if scores.shape != labels.shape:
    raise ValueError(f'score_histogram: scores shape {scores.shape} != labels '
                     f'shape {labels.shape}')
  nbins = num_score_bins(mantissa_bits, octaves)
  valid = ~jnp.isnan(scores)
  if weights is not None:
    weights = jnp.asarray(weights)
    if weights.shape != scores.shape:
      raise ValueError(f'score_histogram: weights shape {weights.shape} != '
                       f'scores shape {scores.shape}')
    valid = valid & (weights > 0)
  keys = score_bins(scores, mantissa_bits, octaves)
  keys = keys + jnp.where(labels != 0, nbins, 0).astype(jnp.int32)
  keys = jnp.where(valid, keys, 2 * nbins)  # A sentinel past every bin.
  if per_example:
    if keys.ndim < 2:
      raise ValueError(f'score_histogram: per_example needs a leading batch '
                       f'axis, got shape {keys.shape}')
    rows = keys.reshape(keys.shape[0], -1)
  else:
    rows = keys.reshape(1, -1)
  edges = jnp.arange(2 * nbins + 1, dtype=jnp.int32)

  def count(row):
    starts = jnp.searchsorted(jnp.sort(row), edges, side='left')
    return jnp.diff(starts).astype(jnp.int32)

  return jnp.sum(jax.vmap(count)(rows), axis=0).reshape(2, nbins)


_score_histogram_jit = jax.jit(score_histogram,
                               static_argnames=('mantissa_bits', 'octaves',
                                                'per_example'))


def roc_auc_from_histogram(hist) -> float:
  """ROC-AUC of a (2, B) histogram (each bin treated as one threshold)."""
  h = np.asarray(hist)
  return roc_auc_from_counts(h[1], h[0])


def pr_auc_from_histogram(hist) -> float:
  """Official-style trapezoid PR-AUC of a (2, B) histogram."""
  h = np.asarray(hist)
  return pr_auc_from_counts(h[1], h[0])


class HistogramAccumulator:
  """Sums `score_histogram` results into int64 and computes the AUCs.

  The binning error is below 1e-4 on typical probability maps (pairs in one
  bin count as ties); `roc_auc` / `pr_auc` give the exact values for checks.
  """

  def __init__(self, mantissa_bits: int = DEFAULT_MANTISSA_BITS,
               octaves: int = DEFAULT_OCTAVES):
    self.mantissa_bits = mantissa_bits
    self.octaves = octaves
    self._sum = _PendingSum((2, num_score_bins(mantissa_bits, octaves)))

  def update(self, hist) -> 'HistogramAccumulator':
    self._sum.add(hist, 'HistogramAccumulator.update')
    return self

  def update_from_scores(self, scores, labels, weights=None
                         ) -> 'HistogramAccumulator':
    """Convenience: a jitted `score_histogram`, then `update`."""
    return self.update(_score_histogram_jit(
        scores, labels, weights, mantissa_bits=self.mantissa_bits,
        octaves=self.octaves))

  @property
  def histogram(self) -> np.ndarray:
    return self._sum.total

  def merge(self, other: 'HistogramAccumulator') -> 'HistogramAccumulator':
    if (other.mantissa_bits, other.octaves) != (self.mantissa_bits,
                                                self.octaves):
      raise ValueError('cannot merge HistogramAccumulators with different '
                       'binning')
    out = HistogramAccumulator(self.mantissa_bits, self.octaves)
    out.update(self.histogram + other.histogram)
    return out

  def compute(self) -> dict[str, float]:
    h = self.histogram
    return {
        'auc_roc': roc_auc_from_counts(h[1], h[0]),
        'auc_pr': pr_auc_from_counts(h[1], h[0]),
        'ap': average_precision_from_counts(h[1], h[0]),
    }


# ----------------------------------------------------------------------------
# SR quality (device side, float32). Images are (..., H, W, C).
#
# For SR outputs in [-1, 1], map both images to [0, 1] with (x + 1) / 2 and
# use data_range=1: PSNR is the same either way, but SSIM's luminance term is
# not shift-invariant, and the literature reports SSIM on [0, 1] (or 0..255)
# images. Clip the SR output to the range first if the report should.


def psnr(x, y, data_range: float = 1.0):
  """Per-image PSNR in dB over the last three axes; inf for identical images."""
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(y, jnp.float32)
  if x.shape != y.shape or x.ndim < 3:
    raise ValueError(f'psnr: need equal (..., H, W, C) shapes, got {x.shape} '
                     f'and {y.shape}')
  mse = jnp.mean(jnp.square(x - y), axis=(-3, -2, -1))
  return 10.0 * jnp.log10(jnp.float32(data_range) ** 2 / mse)


def _gaussian_window(size: int, sigma: float) -> np.ndarray:
  t = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
  g = np.exp(-0.5 * (t / sigma) ** 2)
  return (g / g.sum()).astype(np.float32)


def ssim_metric(x, y, data_range: float = 1.0, *, window_size: int = 11,
                sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03):
  """Per-image Gaussian SSIM (Wang et al. 2004), mean over the map and channels.

  11x11 Gaussian window with sigma 1.5 applied without padding ('valid'), so
  H and W must be at least `window_size`. Separable filtering at HIGHEST
  precision (TF32 convolutions would cost ~1e-3 in SSIM on GPUs).
  """
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(y, jnp.float32)
  if x.shape != y.shape or x.ndim < 3:
    raise ValueError(f'ssim_metric: need equal (..., H, W, C) shapes, got '
                     f'{x.shape} and {y.shape}')
  *lead, h, w, c = x.shape
  if h < window_size or w < window_size:
    raise ValueError(f'ssim_metric: images of {h}x{w} are smaller than the '
                     f'{window_size}x{window_size} window')
  g = jnp.asarray(_gaussian_window(window_size, sigma))
  dn = ('NHWC', 'HWIO', 'NHWC')

  def blur(z):
    z = z.reshape(-1, h, w, c)
    kh = jnp.tile(g.reshape(window_size, 1, 1, 1), (1, 1, 1, c))
    kw = jnp.tile(g.reshape(1, window_size, 1, 1), (1, 1, 1, c))
    for k in (kh, kw):
      z = jax.lax.conv_general_dilated(
          z, k, (1, 1), 'VALID', dimension_numbers=dn, feature_group_count=c,
          precision=jax.lax.Precision.HIGHEST)
    return z

  c1 = (k1 * data_range) ** 2
  c2 = (k2 * data_range) ** 2
  mu_x, mu_y = blur(x), blur(y)
  var_x = blur(x * x) - mu_x * mu_x
  var_y = blur(y * y) - mu_y * mu_y
  cov = blur(x * y) - mu_x * mu_y
  ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2) /
              ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)))
  return jnp.mean(ssim_map, axis=(1, 2, 3)).reshape(lead)


# ----------------------------------------------------------------------------
# Resizing predictions back to the original resolution (spec 5.2 step 6).


def nearest_resize_probs(probs, size: tuple[int, int],
                         axes: tuple[int, int] = (-3, -2)):
  """Resizes (..., h, w, C) maps to (..., H, W, C) by `imaging.nearest_indices`.

  `size` is (H, W) (decision 9.9) and must be static under jit; `axes` are
  the spatial axes (use (-2, -1) for (N, h, w) label maps). Works for any
  dtype since it only gathers.
  """
  probs = jnp.asarray(probs)
  if len(size) != 2:
    raise ValueError(f'nearest_resize_probs: size must be (H, W), got {size}')
  ax_h, ax_w = (a % probs.ndim for a in axes)
  rows = imaging.nearest_indices(probs.shape[ax_h], int(size[0]))
  cols = imaging.nearest_indices(probs.shape[ax_w], int(size[1]))
  out = jnp.take(probs, jnp.asarray(rows, jnp.int32), axis=ax_h)
  return jnp.take(out, jnp.asarray(cols, jnp.int32), axis=ax_w)

