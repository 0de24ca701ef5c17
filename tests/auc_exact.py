"""Exact AUCs (one threshold per distinct score): references for ds2f_jax.auc.

They share `auc.*_from_counts` with the streamed AUCs of eval, so a test of
these against brute force also tests the package's formulas.
"""

import numpy as np

from ds2f_jax import auc


def exact_counts(scores, labels, weights=None):
  """(pos, neg) weighted counts per distinct score, ascending."""
  scores = np.asarray(scores).ravel()
  labels = np.asarray(labels).ravel()
  if scores.shape != labels.shape:
    raise ValueError(f'scores has {scores.size} values but labels has {labels.size}')
  if np.isnan(scores).any():
    raise ValueError('scores contain NaN')
  if not np.isin(labels, (0, 1)).all():
    raise ValueError(f'labels must be 0/1 (or bool), got values {np.unique(labels)[:10]}')
  if weights is None:
    w = np.ones(scores.shape, np.float64)
  else:
    w = np.asarray(weights, np.float64).ravel()
    if w.shape != scores.shape:
      raise ValueError(f'weights has {w.size} values but scores has {scores.size}')
    if np.any(w < 0):
      raise ValueError('weights must be non-negative')
  distinct, inverse = np.unique(scores, return_inverse=True)
  is_pos = labels.astype(bool)
  pos = np.bincount(inverse, weights=w * is_pos, minlength=distinct.size)
  neg = np.bincount(inverse, weights=w * ~is_pos, minlength=distinct.size)
  return pos, neg


def roc_auc(scores, labels, weights=None) -> float:
  """Exact ROC-AUC, ties as sklearn's roc_auc_score."""
  return auc.roc_auc_from_counts(*exact_counts(scores, labels, weights))


def pr_auc(scores, labels, weights=None) -> float:
  """Exact PR-AUC (trapezoid, as the official code)."""
  return auc.pr_auc_from_counts(*exact_counts(scores, labels, weights))


def average_precision(scores, labels, weights=None) -> float:
  """Exact step-wise average precision (sklearn's average_precision_score)."""
  return auc.average_precision_from_counts(*exact_counts(scores, labels, weights))
