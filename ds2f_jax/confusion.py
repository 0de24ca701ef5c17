"""Confusion matrices and the segmentation metrics computed from them.

Device side (jit-able, int32 only, no scatter): `confusion_matrix`, called in
the validation step and in eval. Host side (NumPy, int64 counts, float64
arithmetic): `summarize_confusion` and `ConfusionAccumulator`, which adds
per-batch device results in int64 without a device sync per batch. int64
totals on the host cannot overflow on large test sets (30 HRF images are
2.5e8 pixels).

Conventions (docs/method.md, Evaluation): rows of a confusion matrix are the
ground truth, columns the prediction. A ratio whose denominator is zero is NaN
for that class (e.g. Se when a class is absent from the ground truth, precision
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

# Keys of `summarize_confusion`, in report order.
METRIC_NAMES = ('dice', 'iou', 'se', 'sp', 'acc', 'precision', 'mcc', 'bm')

# Device arrays kept before the accumulators copy them to the host.
_FLUSH_EVERY = 8


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
  """Per-class float64 arrays of shape (C,): the counts and every metric."""
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
  """Reported metrics of one confusion matrix, as Python floats.

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


# ----------------------------------------------------------------------------
# Accumulators (host side).


class PendingSum:
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
    self._sum = PendingSum((self.num_classes, self.num_classes))

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
