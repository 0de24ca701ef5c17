"""What a run tells its user: metrics.jsonl, TensorBoard events, a progress bar.

Only process 0 writes. TensorBoard files come from tensorboardX (no TensorFlow).
"""

import json
import math
import os
import time

import jax
import numpy as np
from absl import logging


class QuietLibraries(logging.logging.Filter):
  """Keeps orbax's per-save and TFDS's per-open INFO chatter out of the console;
  their warnings still show."""

  def filter(self, record):
    return record.levelno >= logging.logging.WARNING or not any(
        lib in record.pathname for lib in ('/orbax/', '/tensorflow_datasets/'))


def quiet_library_logs() -> None:
  """Installs QuietLibraries on absl's handler (and the Python handler behind it)."""
  handler = logging.get_absl_handler()
  for h in (handler, getattr(handler, 'python_handler', handler)):
    h.addFilter(QuietLibraries())


def _plain(v):
  v = np.asarray(v)
  return v.item() if v.ndim == 0 else v.tolist()


def json_safe(value):
  """`value` with every NaN / Inf float replaced by None, so that it serialises as strict
  JSON (`null`) that every reader accepts; docs/reliability.md states the convention."""
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, dict):
    return {k: json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  return value


def json_line(row: dict) -> str:
  """One strict-JSON record (no NaN / Infinity tokens), for metrics.jsonl and metrics.json."""
  return json.dumps(json_safe(row), allow_nan=False)


def _ends_mid_line(path: str) -> bool:
  try:
    with open(path, 'rb') as f:
      f.seek(0, os.SEEK_END)
      if f.tell() == 0:
        return False
      f.seek(-1, os.SEEK_END)
      return f.read(1) != b'\n'
  except OSError:
    return False


class MetricWriter:
  """Appends one JSON object per logged step to WORKDIR/metrics.jsonl and mirrors
  scalars and images to TensorBoard."""

  def __init__(self, workdir: str):
    self.enabled = jax.process_index() == 0
    self._jsonl = None
    self._tb = None
    if not self.enabled:
      return
    path = os.path.join(workdir, 'metrics.jsonl')
    self._jsonl = open(path, 'a', encoding='utf-8')
    if _ends_mid_line(path):  # A kill cut the last record: keep it apart from ours.
      self._jsonl.write('\n')
    try:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))
    except ImportError:  # TensorBoard output is optional; the JSONL log is not.
      logging.warning('tensorboardX not installed: no TensorBoard events.')

  def write_scalars(self, step: int, scalars: dict) -> None:
    if not self.enabled:
      return
    row = {'step': int(step), **{k: _plain(v) for k, v in scalars.items()}}
    self._jsonl.write(json_line(row) + '\n')
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in row.items():
        if k != 'step' and isinstance(v, (int, float)) and math.isfinite(v):
          self._tb.add_scalar(k, v, step)

  def write_images(self, step: int, images: dict) -> None:
    """images: name -> uint8 (H, W, 3) or (N, H, W, 3)."""
    if not self.enabled or self._tb is None:
      return
    for k, v in images.items():
      v = np.asarray(v)
      self._tb.add_images(k, v[None] if v.ndim == 3 else v, step, dataformats='NHWC')

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


class Progress:
  """Step counter with images/s and ETA: a tqdm bar on a terminal, log lines otherwise."""

  def __init__(self, start_step: int, total_steps: int, batch_size: int):
    self.total, self.batch_size = total_steps, batch_size
    self.enabled = jax.process_index() == 0
    self._bar = None
    self._t0, self._s0 = None, start_step
    if self.enabled:
      try:
        import tqdm
        self._bar = tqdm.tqdm(total=total_steps, initial=start_step, unit='step',
                              dynamic_ncols=True, disable=None, smoothing=0.1)
      except ImportError:
        pass

  def update(self, step: int, scalars: dict | None = None) -> None:
    """Called after each step; `scalars` (at log steps) go into the postfix / log line."""
    if not self.enabled:
      return
    now = time.time()
    if self._t0 is None:  # Time from the end of the first (compiling) step.
      self._t0, self._s0 = now, step
    if self._bar is not None and not self._bar.disable:
      self._bar.update(step - self._bar.n)
      if scalars:
        self._bar.set_postfix({k: f'{v:.4g}' for k, v in scalars.items()}, refresh=False)
    elif scalars:
      rate = (step - self._s0) / max(now - self._t0, 1e-9)
      eta = (self.total - step) / rate if rate > 0 else float('nan')
      parts = ' '.join(f'{k}={v:.4g}' for k, v in scalars.items())
      logging.info('step %d/%d %s | ETA %s', step, self.total, parts, _hms(eta))

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


def _hms(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  s = int(seconds)
  return f'{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}'
