"""Tests of ds2f_jax.metrics against independent float64 NumPy references."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ds2f_jax import auc as A
from ds2f_jax import confusion as C
from ds2f_jax import evaluate
from ds2f_jax import metrics as M
from ds2f_jax import sr_quality as SQ
from tests import auc_exact as X


# ----------------------------------------------------------------------------
# References, written from the definitions without the module's helpers.


def batched_confusion(labels, preds, num_classes, weights=None):
  """(N, C, C): one confusion matrix per example of the leading axis."""
  if weights is None:
    return jax.vmap(lambda l, p: C.confusion_matrix(l, p, num_classes))(labels, preds)
  return jax.vmap(lambda l, p, w: C.confusion_matrix(l, p, num_classes, w))(
      labels, preds, weights)


def ref_confusion(labels, preds, c, weights=None):
  m = np.zeros((c, c), np.int64)
  w = np.ones(labels.shape) if weights is None else weights
  for l, p, wi in zip(labels.ravel(), preds.ravel(), w.ravel()):
    if wi > 0 and 0 <= l < c and 0 <= p < c:
      m[l, p] += 1
  return m


def div(a, b):
  return a / b if b != 0 else math.nan


def ref_class_metrics(m, k):
  """The formulas of docs/method.md §Metric definitions for class k with plain Python scalars."""
  m = np.asarray(m, np.float64)
  total = m.sum()
  tp = m[k, k]
  fp = m[:, k].sum() - tp
  fn = m[k, :].sum() - tp
  tn = total - tp - fp - fn
  se, sp = div(tp, tp + fn), div(tn, tn + fp)
  den = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
  return {
      'dice': div(2 * tp, 2 * tp + fp + fn),
      'iou': div(tp, tp + fp + fn),
      'se': se,
      'sp': sp,
      'acc': div(tp + tn, total),
      'precision': div(tp, tp + fp),
      'mcc': div(tp * tn - fp * fn, math.sqrt(den)),
      'bm': se + sp - 1,
  }


def ref_roc_pairwise(s, y, w=None):
  """P(s_pos > s_neg) + 0.5 P(s_pos == s_neg), weighted by w_i * w_j."""
  w = np.ones(s.shape) if w is None else w
  pos, neg = y == 1, y == 0
  sp, sn = s[pos][:, None], s[neg][None, :]
  wp, wn = w[pos][:, None], w[neg][None, :]
  num = np.sum(wp * wn * ((sp > sn) + 0.5 * (sp == sn)))
  return num / (wp.sum() * wn.sum())


def ref_pr_curve(s, y, w=None):
  """(recall, precision) at every distinct threshold, recall ascending."""
  w = np.ones(s.shape) if w is None else w
  pts = []
  for t in np.unique(s):
    sel = s >= t
    tp = np.sum(w * sel * (y == 1))
    fp = np.sum(w * sel * (y == 0))
    if tp + fp > 0:
      pts.append((tp / np.sum(w * (y == 1)), tp / (tp + fp), t))
  pts.sort(key=lambda q: -q[2])  # Descending threshold: recall ascending.
  return np.array([q[0] for q in pts]), np.array([q[1] for q in pts])


def ref_pr_trapezoid(s, y, w=None):
  r, p = ref_pr_curve(s, y, w)
  r = np.concatenate([[0.0], r])
  p = np.concatenate([[1.0], p])
  return sum((r[i + 1] - r[i]) * (p[i + 1] + p[i]) / 2
             for i in range(len(r) - 1))


def ref_ap(s, y, w=None):
  r, p = ref_pr_curve(s, y, w)
  r = np.concatenate([[0.0], r])
  return sum((r[i + 1] - r[i]) * p[i] for i in range(len(p)))


def ref_ssim(x, y, data_range, size=11, sigma=1.5):
  """Direct 2-D Gaussian-window SSIM of one (H, W, C) pair, float64."""
  t = np.arange(size) - (size - 1) / 2
  g = np.exp(-t ** 2 / (2 * sigma ** 2))
  win = np.outer(g, g) / np.outer(g, g).sum()
  x = x.astype(np.float64)
  y = y.astype(np.float64)
  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  vals = []
  for ch in range(x.shape[-1]):
    px = np.lib.stride_tricks.sliding_window_view(x[..., ch], (size, size))
    py = np.lib.stride_tricks.sliding_window_view(y[..., ch], (size, size))
    mx = np.einsum('ijab,ab->ij', px, win)
    my = np.einsum('ijab,ab->ij', py, win)
    vx = np.einsum('ijab,ab->ij', px * px, win) - mx ** 2
    vy = np.einsum('ijab,ab->ij', py * py, win) - my ** 2
    cv = np.einsum('ijab,ab->ij', px * py, win) - mx * my
    vals.append(((2 * mx * my + c1) * (2 * cv + c2) /
                 ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))).mean())
  return np.mean(vals)


def assert_metrics_equal(got, want, rtol=1e-12):
  assert set(got) == set(want)
  for k in want:
    if math.isnan(want[k]):
      assert math.isnan(got[k]), (k, got[k])
    else:
      np.testing.assert_allclose(got[k], want[k], rtol=rtol, atol=1e-15,
                                 err_msg=k)


# ----------------------------------------------------------------------------
# Confusion matrices.


@pytest.mark.parametrize('c', [2, 4])
def test_confusion_matrix_random_with_weights_and_void(c):
  rng = np.random.default_rng(c)
  labels = rng.integers(0, c, (3, 17, 13))
  labels[0, 0, :5] = 255  # Void labels are ignored.
  preds = rng.integers(0, c, (3, 17, 13))
  weights = (rng.random((3, 17, 13)) < 0.6).astype(np.float32)
  got = C.confusion_matrix(labels.astype(np.uint8), preds, c)
  assert got.dtype == jnp.int32 and got.shape == (c, c)
  np.testing.assert_array_equal(got, ref_confusion(labels, preds, c))
  assert int(got.sum()) == labels.size - 5
  got_w = C.confusion_matrix(labels, preds, c, weights)
  np.testing.assert_array_equal(got_w, ref_confusion(labels, preds, c, weights))


def test_confusion_matrix_under_jit_and_batched():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 3, (4, 9, 11))
  preds = rng.integers(0, 3, (4, 9, 11))
  fov = rng.random((4, 9, 11)) < 0.5
  f = jax.jit(functools.partial(C.confusion_matrix, num_classes=3))
  np.testing.assert_array_equal(f(labels, preds, weights=fov),
                                ref_confusion(labels, preds, 3, fov))
  per = jax.jit(batched_confusion, static_argnums=2)(
      labels, preds, 3, fov)
  assert per.shape == (4, 3, 3)
  for i in range(4):
    np.testing.assert_array_equal(per[i], ref_confusion(labels[i], preds[i], 3,
                                                        fov[i]))


def test_confusion_matrix_bad_input():
  with pytest.raises(ValueError, match='num_classes'):
    C.confusion_matrix(np.zeros(4, int), np.zeros(4, int), 1)
  with pytest.raises(ValueError, match='preds shape'):
    C.confusion_matrix(np.zeros(4, int), np.zeros(5, int), 2)
  with pytest.raises(ValueError, match='weights shape'):
    C.confusion_matrix(np.zeros(4, int), np.zeros(4, int), 2, np.ones(3))


# ----------------------------------------------------------------------------
# Confusion-matrix metrics.


def test_per_class_metrics_random_against_formulas():
  rng = np.random.default_rng(2)
  for c in (2, 3, 5):
    m = rng.integers(0, 10_000, (c, c))
    per = C.per_class_metrics(m)
    for k in range(c):
      want = ref_class_metrics(m, k)
      for name, v in want.items():
        np.testing.assert_allclose(per[name][k], v, rtol=1e-12, err_msg=name)
    np.testing.assert_array_equal(per['tp'] + per['fp'] + per['fn'] +
                                  per['tn'], np.full(c, m.sum()))


def test_summarize_binary_is_class_one():
  m = np.array([[9000, 150], [230, 620]])
  got = C.summarize_confusion(m)
  assert set(got) == set(C.METRIC_NAMES)
  assert_metrics_equal(got, ref_class_metrics(m, 1))
  # Pinned by hand: Dice = 1240 / (1240 + 150 + 230).
  assert got['dice'] == pytest.approx(1240 / 1620, rel=1e-15)
  assert got['acc'] == pytest.approx(9620 / 10000, rel=1e-15)


def binary_cm(labels, preds, fov=None):
  return np.asarray(C.confusion_matrix(labels, preds, 2, fov), np.int64)


def test_edge_empty_prediction():
  labels = np.zeros((8, 8), int)
  labels[2:4, 2:6] = 1
  got = C.summarize_confusion(binary_cm(labels, np.zeros_like(labels)))
  assert got['dice'] == 0.0 and got['iou'] == 0.0 and got['se'] == 0.0
  assert got['sp'] == 1.0 and got['acc'] == 56 / 64 and got['bm'] == 0.0
  assert math.isnan(got['precision']) and math.isnan(got['mcc'])


def test_edge_empty_ground_truth():
  preds = np.zeros((8, 8), int)
  preds[0, :4] = 1
  got = C.summarize_confusion(binary_cm(np.zeros_like(preds), preds))
  assert got['dice'] == 0.0 and got['iou'] == 0.0 and got['precision'] == 0.0
  assert got['sp'] == 60 / 64 and got['acc'] == 60 / 64
  assert math.isnan(got['se']) and math.isnan(got['mcc'])
  assert math.isnan(got['bm'])


def test_edge_both_empty_and_all_foreground():
  zeros = np.zeros((8, 8), int)
  got = C.summarize_confusion(binary_cm(zeros, zeros))
  assert got['acc'] == 1.0 and got['sp'] == 1.0
  for k in ('dice', 'iou', 'se', 'precision', 'mcc'):
    assert math.isnan(got[k]), k
  ones = np.ones((8, 8), int)
  got = C.summarize_confusion(binary_cm(ones, ones))
  for k in ('dice', 'iou', 'se', 'precision', 'acc'):
    assert got[k] == 1.0, k
  assert math.isnan(got['sp']) and math.isnan(got['mcc'])


def test_edge_fov_keeps_only_a_few_pixels():
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 2, (16, 16))
  preds = rng.integers(0, 2, (16, 16))
  fov = np.zeros((16, 16), np.float32)
  idx = [(0, 0), (5, 7), (9, 3), (15, 15)]
  labels[0, 0], preds[0, 0] = 1, 1  # TP
  labels[5, 7], preds[5, 7] = 0, 1  # FP
  labels[9, 3], preds[9, 3] = 1, 0  # FN
  labels[15, 15], preds[15, 15] = 0, 0  # TN
  for i, j in idx:
    fov[i, j] = 1
  m = binary_cm(labels, preds, fov)
  np.testing.assert_array_equal(m, [[1, 1], [1, 1]])
  got = C.summarize_confusion(m)
  assert got['dice'] == 0.5 and got['se'] == 0.5 and got['sp'] == 0.5
  assert got['mcc'] == 0.0 and got['acc'] == 0.5


def test_multiclass_keys_and_nan_mean():
  m = np.array([[50, 2, 1, 0],
                [3, 20, 2, 0],
                [1, 4, 30, 0],
                [0, 0, 0, 0]])  # Class 3 never occurs nor is predicted.
  names = ('bg', 'disc', 'cup', 'rim')
  got = C.summarize_confusion(m, names)
  want_keys = set(C.METRIC_NAMES) | {
      f'{k}/{n}' for k in C.METRIC_NAMES for n in names[1:]}
  assert set(got) == want_keys
  for k in C.METRIC_NAMES:
    per = [ref_class_metrics(m, c)[k] for c in (1, 2, 3)]
    for c, n in zip((1, 2, 3), names[1:]):
      v = got[f'{k}/{n}']
      assert (math.isnan(v) and math.isnan(per[c - 1])) or v == pytest.approx(
          per[c - 1], rel=1e-12)
    finite = [v for v in per if not math.isnan(v)]
    assert got[k] == pytest.approx(np.mean(finite), rel=1e-12), k
  assert math.isnan(got['dice/rim']) and not math.isnan(got['dice'])
  default = C.summarize_confusion(m)
  assert 'dice/1' in default and 'dice/0' not in default
  with pytest.raises(ValueError, match='class_names'):
    C.summarize_confusion(m, ('bg', 'disc'))
  with pytest.raises(ValueError, match='square'):
    C.summarize_confusion(np.zeros((2, 3)))


def test_accumulator_matches_global_matrix_and_merges():
  rng = np.random.default_rng(4)
  labels = rng.integers(0, 3, (20, 6, 6))
  preds = rng.integers(0, 3, (20, 6, 6))
  step = jax.jit(functools.partial(C.confusion_matrix, num_classes=3))
  a, b = C.ConfusionAccumulator(3), C.ConfusionAccumulator(3)
  for i in range(12):  # More than one flush of pending device arrays.
    a.update(step(labels[i], preds[i]))
  b.update(batched_confusion(labels[12:], preds[12:], 3))
  whole = ref_confusion(labels, preds, 3)
  merged = a.merge(b)
  assert merged.matrix.dtype == np.int64
  np.testing.assert_array_equal(merged.matrix, whole)
  assert_metrics_equal(merged.compute(), C.summarize_confusion(whole))
  with pytest.raises(ValueError, match='shape'):
    a.update(np.zeros((2, 2), np.int32))


def test_per_image_vs_global():
  labels = np.zeros((3, 4, 4), int)
  preds = np.zeros((3, 4, 4), int)
  labels[0, :2] = 1
  preds[0, :2] = 1  # Image 0: perfect, 8 fg pixels; Dice 1.
  labels[1, 0, :2] = 1
  preds[1, 0, :1] = 1  # Image 1: Dice 2/3.
  # Image 2: no foreground anywhere; Dice NaN, skipped by the mean.
  cms = np.asarray(batched_confusion(labels, preds, 2))
  rows = [C.summarize_confusion(m) for m in cms]
  assert rows[0]['dice'] == 1.0 and rows[1]['dice'] == pytest.approx(2 / 3)
  assert math.isnan(rows[2]['dice'])
  # Eval's per-image statistics (mean and population std, NaN skipped).
  s = evaluate._per_image_stats([{f'fov/{k}': v for k, v in r.items()} for r in rows])
  assert set(s) == {f'fov/{k}_per_image_{t}' for k in C.METRIC_NAMES
                    for t in ('mean', 'std')}
  assert s['fov/dice_per_image_mean'] == pytest.approx((1 + 2 / 3) / 2, rel=1e-14)
  assert s['fov/dice_per_image_std'] == pytest.approx(1 / 6, rel=1e-14)
  assert s['fov/acc_per_image_mean'] == pytest.approx((1 + 15 / 16 + 1) / 3)
  # Global (micro) Dice pools pixels: 2 * 9 / (2 * 9 + 0 + 1).
  glob = C.summarize_confusion(cms.sum(0))
  assert glob['dice'] == pytest.approx(18 / 19, rel=1e-14)
  assert glob['dice'] != pytest.approx(s['fov/dice_per_image_mean'])


# ----------------------------------------------------------------------------
# AUCs.


def test_auc_hand_example():
  s = np.array([0.1, 0.4, 0.35, 0.8])
  y = np.array([0, 0, 1, 1])
  assert X.roc_auc(s, y) == pytest.approx(0.75, rel=1e-15)
  assert X.average_precision(s, y) == pytest.approx(5 / 6, rel=1e-15)
  # Trapezoid: (0,1)-(.5,1) = .5, (.5,.5)-(1,2/3) = .5 * (.5 + 2/3) / 2.
  assert X.pr_auc(s, y) == pytest.approx(0.5 + 0.25 * (0.5 + 2 / 3),
                                         rel=1e-15)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_exact_aucs_against_brute_force_with_ties(seed):
  rng = np.random.default_rng(seed)
  n = 300
  y = (rng.random(n) < 0.3).astype(int)
  s = np.round(rng.random(n) * 0.6 + 0.4 * y, 1)  # Heavy ties.
  fov = (rng.random(n) < 0.7).astype(float)
  w = rng.random(n) * 2
  for weights in (None, fov, w):
    np.testing.assert_allclose(X.roc_auc(s, y, weights),
                               ref_roc_pairwise(s, y, weights), rtol=1e-12)
    np.testing.assert_allclose(X.pr_auc(s, y, weights),
                               ref_pr_trapezoid(s, y, weights), rtol=1e-12)
    np.testing.assert_allclose(X.average_precision(s, y, weights),
                               ref_ap(s, y, weights), rtol=1e-12)


def test_fov_weights_equal_dropping_pixels():
  rng = np.random.default_rng(5)
  s = rng.random(200).astype(np.float32)
  y = (rng.random(200) < 0.4).astype(int)
  fov = rng.random(200) < 0.5
  assert X.roc_auc(s, y, fov) == X.roc_auc(s[fov], y[fov])
  assert X.pr_auc(s, y, fov) == X.pr_auc(s[fov], y[fov])


def test_auc_degenerate_classes():
  s = np.array([0.2, 0.6, 0.9])
  assert math.isnan(X.roc_auc(s, [0, 0, 0]))
  assert math.isnan(X.pr_auc(s, [0, 0, 0]))
  assert math.isnan(X.roc_auc(s, [1, 1, 1]))
  assert X.pr_auc(s, [1, 1, 1]) == 1.0
  assert X.roc_auc([0.5, 0.5], [0, 1]) == 0.5
  with pytest.raises(ValueError, match='0/1'):
    X.roc_auc(s, [0, 255, 255])
  with pytest.raises(ValueError, match='NaN'):
    X.pr_auc([0.1, np.nan], [0, 1])


def test_score_bins_monotone_and_fine():
  p = np.sort(np.concatenate([
      np.random.default_rng(6).random(5000), [0, 1e-30, 1e-12, 0.5, 1.0],
      np.nextafter(np.float32(1), np.float32(0), dtype=np.float32)[None],
  ]).astype(np.float32))
  bins = np.asarray(A.score_bins(p))
  assert bins.dtype == np.int32
  assert np.all(np.diff(bins) >= 0)
  assert bins[0] == 0 and bins[-1] == A.num_score_bins() - 1
  assert A.num_score_bins() == 2 * 40 * 4096 + 3
  # Resolution: relative 2^-12 of the distance to 0 or 1.
  near = np.array([0.3, 0.3001, 1e-6, 1.001e-6, 1 - 1e-4, 1 - 1.001e-4],
                  np.float32)
  b = np.asarray(A.score_bins(near))
  assert b[0] < b[1] and b[2] < b[3] and b[5] < b[4]
  # 1 - 2^-24 (the largest float32 below 1) is not merged with 1.0.
  assert bins[-2] < bins[-1]


def test_histogram_auc_within_1e4_of_exact():
  rng = np.random.default_rng(7)
  n = 100_000
  y = rng.random(n) < 0.12
  logit = np.where(y, rng.normal(3, 2.5, n), rng.normal(-4, 2.5, n))
  p = np.asarray(jax.nn.sigmoid(jnp.asarray(logit, jnp.float32)))
  fov = rng.random(n) < 0.8
  hist = jax.jit(A.score_histogram)(p, y, fov)
  assert hist.shape == (2, A.num_score_bins()) and hist.dtype == jnp.int32
  per_example = jax.jit(functools.partial(A.score_histogram, per_example=True))
  np.testing.assert_array_equal(
      per_example(p.reshape(4, 250, 100), y.reshape(4, 250, 100),
                  fov.reshape(4, 250, 100)), hist)
  np.testing.assert_array_equal(np.asarray(hist).sum(1),
                                [np.sum(fov & ~y), np.sum(fov & y)])
  exact_roc, exact_pr = X.roc_auc(p, y, fov), X.pr_auc(p, y, fov)
  assert 0.9 < exact_roc < 0.999
  assert abs(A.aucs_from_counts(hist)['auc_roc'] - exact_roc) < 1e-4
  assert abs(A.aucs_from_counts(hist)['auc_pr'] - exact_pr) < 1e-4
  # Streaming over batches gives the same histogram as one call.
  acc = A.HistogramAccumulator()
  hist_of = jax.jit(A.score_histogram)
  for i in range(4):
    acc.update(hist_of(p.reshape(4, -1)[i], y.reshape(4, -1)[i], fov.reshape(4, -1)[i]))
  np.testing.assert_array_equal(acc.histogram, hist)
  out = acc.merge(A.HistogramAccumulator()).compute()
  assert out['auc_roc'] == A.aucs_from_counts(hist)['auc_roc']
  assert abs(out['ap'] - X.average_precision(p, y, fov)) < 1e-4


def test_histogram_equals_exact_when_scores_are_on_bin_edges():
  # Distinct scores far apart land in distinct bins: identical AUCs.
  rng = np.random.default_rng(8)
  s = np.round(rng.random(2000), 2).astype(np.float32)
  y = (rng.random(2000) < s).astype(int)
  h = jax.jit(A.score_histogram)(s, y)
  assert A.aucs_from_counts(h)['auc_roc'] == pytest.approx(X.roc_auc(s, y),
                                                      rel=1e-13)
  assert A.aucs_from_counts(h)['auc_pr'] == pytest.approx(X.pr_auc(s, y), rel=1e-13)


# ----------------------------------------------------------------------------
# SR quality.


def test_psnr_against_numpy():
  rng = np.random.default_rng(9)
  x = rng.random((2, 12, 10, 3)).astype(np.float32)
  y = np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1).astype(np.float32)
  got = jax.jit(SQ.psnr, static_argnums=2)(x, y, 1.0)
  mse = ((x.astype(np.float64) - y) ** 2).mean(axis=(1, 2, 3))
  np.testing.assert_allclose(got, 10 * np.log10(1.0 / mse), rtol=1e-5)
  # [-1, 1] images with range 2 give the same PSNR as [0, 1] with range 1.
  np.testing.assert_allclose(SQ.psnr(2 * x - 1, 2 * y - 1, 2.0), got, rtol=1e-5)
  assert np.isinf(SQ.psnr(x, x)).all()


def test_ssim_against_numpy():
  rng = np.random.default_rng(10)
  # Dark, shifted images so that both the luminance and contrast terms (and
  # so C1 and C2) matter.
  x = (0.2 * rng.random((2, 20, 17, 3))).astype(np.float32)
  y = np.clip(0.5 * x + 0.05 + rng.normal(0, 0.03, x.shape), 0, 1).astype(
      np.float32)
  got = jax.jit(SQ.ssim)(x, y)
  assert got.shape == (2,)
  want = [ref_ssim(x[i], y[i], 1.0) for i in range(2)]
  np.testing.assert_allclose(got, want, atol=2e-5)
  np.testing.assert_allclose(SQ.ssim(x[0], x[0]), 1.0, atol=1e-6)
  with pytest.raises(ValueError, match='smaller than'):
    SQ.ssim(x[:, :8], y[:, :8])


# ----------------------------------------------------------------------------
# Nearest resize.


def test_nearest_resize_probs_shapes_and_values():
  rng = np.random.default_rng(11)
  probs = rng.random((2, 6, 5, 3)).astype(np.float32)
  f = jax.jit(M.nearest_resize_probs, static_argnums=1)
  out = f(probs, (13, 8))
  assert out.shape == (2, 13, 8, 3) and out.dtype == jnp.float32
  r = [(d * 6) // 13 for d in range(13)]
  c = [(d * 5) // 8 for d in range(8)]
  np.testing.assert_array_equal(out, probs[:, r][:, :, c])
  labels = rng.integers(0, 2, (2, 6, 5)).astype(np.uint8)
  out_l = M.nearest_resize_probs(labels, (12, 10), axes=(-2, -1))
  assert out_l.dtype == jnp.uint8
  np.testing.assert_array_equal(out_l, labels.repeat(2, 1).repeat(2, 2))
