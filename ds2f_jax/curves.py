"""Training curves as a PNG: WORKDIR/curves.png, and an ablation's comparison.

Drawn with Pillow, which the project already needs for images, rather than
matplotlib (~40 MB with its font, contour and layout dependencies) for three
line plots. The figure is rebuilt from WORKDIR/metrics.jsonl, so it survives
resumes: rows of a step logged twice (a run resumed from an earlier
checkpoint) keep the newest values.

curves.png has three panels, top to bottom: the loss and its parts over
steps (log scale when all positive), the learning rate, and validation Dice
and IoU with the best-Dice step marked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import json
import math
import os

import jax
from PIL import Image, ImageDraw, ImageFont

LOSS_KEYS = ('loss', 'ce', 'mse', 'ssim', 'rmi')
VAL_KEYS = ('val/dice', 'val/iou')
BEST_KEY = 'val/dice'

WIDTH, PANEL_HEIGHT = 900, 280
_MARGIN = (70, 30, 150, 40)  # Left, top, right (legend), bottom.
_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
BEST_COLOUR = (200, 0, 0)


def read_rows(path: str) -> dict[int, dict]:
  """metrics.jsonl as {step: merged row}; later rows win, bad lines are skipped."""
  rows: dict[int, dict] = {}
  with open(path, encoding='utf-8') as f:
    for line in f:
      try:
        row = json.loads(line)
        step = int(row.pop('step'))
      except (ValueError, KeyError, TypeError):
        continue  # A line cut short by a kill: the rest is still worth a plot.
      rows.setdefault(step, {}).update(row)
  return dict(sorted(rows.items()))


def series(rows: Mapping[int, dict], key: str) -> list[tuple[int, float]]:
  """(step, value) of every finite `key` in `rows`."""
  out = []
  for step, row in rows.items():
    v = row.get(key)
    if isinstance(v, (int, float)) and math.isfinite(v):
      out.append((step, float(v)))
  return out


def best_step(rows: Mapping[int, dict]) -> tuple[int, float] | None:
  """(step, value) of the highest validation Dice (the first, on ties)."""
  points = series(rows, BEST_KEY)
  return max(points, key=lambda p: (p[1], -p[0])) if points else None


def _font():
  try:
    return ImageFont.load_default(size=13)
  except TypeError:  # Pillow < 10.1: the fixed bitmap font.
    return ImageFont.load_default()


def _panel(title: str, lines: Mapping[str, Sequence[tuple[int, float]]],
           log_y: bool = False, mark: tuple[int, float] | None = None,
           x_range: tuple[float, float] | None = None) -> Image.Image:
  """One line plot: a frame, min/max tick labels, a legend, an optional marker."""
  img = Image.new('RGB', (WIDTH, PANEL_HEIGHT), 'white')
  draw = ImageDraw.Draw(img)
  font = _font()
  left, top, right, bottom = _MARGIN
  x0, y0, x1, y1 = left, top, WIDTH - right, PANEL_HEIGHT - bottom
  draw.text((x0, 8), title, fill='black', font=font)
  draw.rectangle((x0, y0, x1, y1), outline=(80, 80, 80))
  lines = {k: v for k, v in lines.items() if v}
  if log_y and any(v <= 0 for pts in lines.values() for _, v in pts):
    log_y = False
  if not lines:
    draw.text((x0 + 10, y0 + 10), 'no data yet', fill=(120, 120, 120), font=font)
    return img
  ty = (lambda v: math.log10(v)) if log_y else (lambda v: v)
  xs = [s for pts in lines.values() for s, _ in pts]
  ys = [ty(v) for pts in lines.values() for _, v in pts]
  xmin, xmax = x_range or (min(xs), max(xs))
  ymin, ymax = min(ys), max(ys)
  if xmax == xmin:
    xmin, xmax = xmin - 1, xmax + 1
  if ymax == ymin:
    pad = abs(ymin) * 0.05 or 0.5
    ymin, ymax = ymin - pad, ymax + pad

  def px(step, value):
    return (x0 + (step - xmin) / (xmax - xmin) * (x1 - x0),
            y1 - (ty(value) - ymin) / (ymax - ymin) * (y1 - y0))

  def label(v):
    return f'{10 ** v:.3g}' if log_y else f'{v:.4g}'

  draw.text((4, y0 - 6), label(ymax), fill='black', font=font)
  draw.text((4, y1 - 8), label(ymin), fill='black', font=font)
  draw.text((x0, y1 + 6), f'step {xmin:g}', fill='black', font=font)
  end = f'step {xmax:g}'
  draw.text((x1 - draw.textlength(end, font=font), y1 + 6), end, fill='black', font=font)
  if mark is not None:
    mx, my = px(*mark)
    draw.line((mx, y0, mx, y1), fill=BEST_COLOUR, width=1)
    draw.ellipse((mx - 5, my - 5, mx + 5, my + 5), outline=BEST_COLOUR, width=2)
  for i, (name, pts) in enumerate(lines.items()):
    colour = _COLOURS[i % len(_COLOURS)]
    xy = [px(s, v) for s, v in pts]
    if len(xy) > 1:
      draw.line(xy, fill=colour, width=2)
    for x, y in xy if len(xy) < 40 else ():
      draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
    ly = y0 + 4 + 18 * i
    draw.line((x1 + 10, ly + 7, x1 + 30, ly + 7), fill=colour, width=3)
    draw.text((x1 + 36, ly), name, fill='black', font=font)
  if mark is not None:
    ly = y0 + 4 + 18 * len(lines)
    draw.text((x1 + 10, ly), f'best: step {mark[0]}', fill=BEST_COLOUR, font=font)
    draw.text((x1 + 10, ly + 16), f'{BEST_KEY} {mark[1]:.4f}', fill=BEST_COLOUR, font=font)
  return img


def _stack(panels: Sequence[Image.Image]) -> Image.Image:
  out = Image.new('RGB', (WIDTH, PANEL_HEIGHT * len(panels)), 'white')
  for i, p in enumerate(panels):
    out.paste(p, (0, i * PANEL_HEIGHT))
  return out


def render(rows: Mapping[int, dict]) -> Image.Image:
  """The three panels of curves.png, from `read_rows`'s result."""
  steps = list(rows)
  x_range = (min(steps), max(steps)) if steps else None
  return _stack([
      _panel('training loss', {k: series(rows, k) for k in LOSS_KEYS}, log_y=True,
             x_range=x_range),
      _panel('learning rate', {'lr': series(rows, 'lr')}, x_range=x_range),
      _panel('validation', {k: series(rows, k) for k in VAL_KEYS}, mark=best_step(rows),
             x_range=x_range),
  ])


def _save(img: Image.Image, path: str) -> str:
  tmp = path + '.tmp'
  img.save(tmp, format='PNG')
  os.replace(tmp, path)  # A viewer never sees half a file.
  return path


def write(workdir: str) -> str | None:
  """Rewrites WORKDIR/curves.png from WORKDIR/metrics.jsonl; None if there is none.

  Process 0 only (the one that writes metrics.jsonl).
  """
  if jax.process_index() != 0:
    return None
  source = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(source):
    return None
  return _save(render(read_rows(source)), os.path.join(workdir, 'curves.png'))


def write_comparison(path: str, runs: Mapping[str, str]) -> str | None:
  """One figure of validation Dice and IoU, one line per run {label: run dir}.

  Runs without a metrics.jsonl yet are left out; None when none has one (or
  on processes other than 0).
  """
  if jax.process_index() != 0:
    return None
  rows = {name: read_rows(os.path.join(d, 'metrics.jsonl')) for name, d in runs.items()
          if os.path.exists(os.path.join(d, 'metrics.jsonl'))}
  if not rows:
    return None
  return _save(_stack([
      _panel(f'validation {key[4:]}', {name: series(r, key) for name, r in rows.items()})
      for key in VAL_KEYS
  ]), path)
