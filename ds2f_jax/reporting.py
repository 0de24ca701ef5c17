"""What a run tells its user: metrics.jsonl, TensorBoard events, a progress bar.

Only process 0 writes. TensorBoard files come from tensorboardX (no TensorFlow).
"""

import json
import math
import os
import sys
import time

from absl import flags
from absl import logging
import jax
import numpy as np


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


def in_notebook() -> bool:
  """True inside a Jupyter / Colab kernel (whose shell has a kernel)."""
  ipython = sys.modules.get('IPython')
  if ipython is None:
    return False
  shell = ipython.get_ipython()
  return shell is not None and getattr(shell, 'kernel', None) is not None


def note(message: str) -> None:
  """One progress line the user sees however the library was called.

  Under `app.run` (main.py, the `ds2f` command) absl's INFO log is shown, so
  the line goes there (and into its log files). Called from Python or a
  notebook, absl INFO is not shown: the line is printed to stderr instead.
  """
  if flags.FLAGS.is_parsed() and logging.level_info():
    logging.info('%s', message)
  else:
    print(message, file=sys.stderr, flush=True)


class Progress:
  """Steps or images done, with their rate and an ETA, wherever the run is watched.

  A tqdm bar on a terminal, a notebook bar (tqdm.auto) in Jupyter / Colab, and
  otherwise (output redirected, or a script's stderr) a `note` line: for
  train steps at each `update` that carries scalars (every log_every_steps),
  for images every ~10 % of the total. Only process 0 shows anything.
  """

  def __init__(self, total: int, *, initial: int = 0, desc: str = 'train',
               unit: str = 'step'):
    self.total, self.done, self.desc, self.unit = total, initial, desc, unit
    self.enabled = jax.process_index() == 0
    self._bar = None
    # Train steps: the rate runs from the end of the first (compiling) step.
    self._t0 = None if unit == 'step' else time.time()
    self._s0 = initial
    self._next_line = initial + max(total // 10, 1)
    if not self.enabled:
      return
    try:
      if in_notebook():
        from tqdm import auto as tqdm_module
      elif sys.stderr.isatty():
        import tqdm as tqdm_module
      else:
        tqdm_module = None
    except ImportError:
      tqdm_module = None
    if tqdm_module is not None:
      self._bar = tqdm_module.tqdm(total=total, initial=initial, desc=desc, unit=unit,
                                   dynamic_ncols=True, smoothing=0.1)

  def advance(self, n: int = 1) -> None:
    """`n` more done (images of an eval or predict run)."""
    self.update(self.done + n)

  def update(self, done: int, scalars: dict | None = None) -> None:
    """`done` of `total` now; `scalars` (at log steps) go into the postfix / line."""
    if not self.enabled:
      return
    now = time.time()
    if self._t0 is None:
      self._t0, self._s0 = now, done
    self.done = done
    if self._bar is not None:
      self._bar.update(done - self._bar.n)
      if scalars:
        self._bar.set_postfix({k: f'{v:.4g}' for k, v in scalars.items()}, refresh=False)
      return
    if not scalars and (self.unit == 'step' or done < self._next_line and done != self.total):
      return  # Train steps: a line at each log step (the ones with scalars).
    self._next_line = done + max(self.total // 10, 1)
    rate = (done - self._s0) / max(now - self._t0, 1e-9)
    eta = (self.total - done) / rate if rate > 0 else float('nan')
    parts = ''.join(f' {k}={v:.4g}' for k, v in (scalars or {}).items())
    speed = f' | {rate:.3g} {self.unit}/s' if rate > 0 else ''
    note(f'{self.desc}: {done}/{self.total} {self.unit}s{parts}{speed} | ETA {_hms(eta)}')

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None


def _hms(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  s = int(seconds)
  return f'{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}'
