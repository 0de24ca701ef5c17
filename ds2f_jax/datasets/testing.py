"""Helpers for the builder tests: build into a temp dir, read back TF-free."""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

tfds.disable_progress_bar()


def build(builder_cls, manual_dir, data_dir, **kwargs):
  """A prepared builder, built from `manual_dir` into `data_dir`."""
  builder = builder_cls(data_dir=os.fspath(data_dir), **kwargs)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=os.fspath(manual_dir)))
  return builder


def examples(builder, split: str) -> dict[str, dict]:
  """Every example of a split, by file name, read through the data source."""
  source = builder.as_data_source(split)
  out = {}
  for i in range(len(source)):
    ex = source[i]
    name = ex['file_name']
    out[name.decode() if isinstance(name, bytes) else name] = ex
  return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
  a, b = a.astype(bool), b.astype(bool)
  return float((a & b).sum() / max(1, (a | b).sum()))


def prepared_dirs(data_dir) -> list[str]:
  """Every version dir under data_dir, finished or not (incomplete.*)."""
  found = []
  for dirpath, dirnames, _ in os.walk(os.fspath(data_dir)):
    for d in dirnames:
      if d[:1].isdigit() or d.startswith('incomplete'):
        found.append(os.path.relpath(os.path.join(dirpath, d), data_dir))
  return sorted(found)
