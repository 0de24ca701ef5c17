r"""One accuracy table and one training-curve figure from finished runs.

  python benchmarks/accuracy_report.py --out REPORT \
      --run 'ds2f (ours)=W/ds2f/*' --run 'seg_only (ours)=W/seg_only/*' \
      --run 'ds2f (official)=O/*' [--split test]

Each --run is LABEL=GLOB; the glob names run directories (one per seed), as
`python -m ds2f_jax.ablate` (W/<variant>/<seed>) and
benchmarks/official_train.py (its --workdir) write them: metrics.jsonl (the
training log), config.json (written when training starts) and
eval/<split>/metrics.json (our evaluator, both protocols).

Writes REPORT/accuracy.md, a markdown table to paste into docs/results.md:
per label the FOV protocol (F1, AUC-ROC, Se, Sp, Acc, inside the field of
view) and the official protocol (Dice = F1, Se, Sp, Acc over whole images),
in %, mean ± sample std (ddof = 1) over the runs, the training speed and the
wall time; and REPORT/curves.png: loss, its four parts and the validation
Dice against the step, every run one line, one colour per label. Drawn with
Pillow (matplotlib is not a dependency).

Wall time of a run = mtime(eval/<split>/metrics.json) - mtime(config.json):
from the start of training to the end of the test evaluation, compile and
validations included, the same measure for both implementations.
"""

import argparse
import glob
import json
import math
import os
import statistics
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# (metrics.json key, column header), in table order.
COLUMNS = (('fov/f1', 'FOV F1'), ('fov/auc_roc', 'FOV AUC-ROC'), ('fov/se', 'FOV Se'),
           ('fov/sp', 'FOV Sp'), ('fov/acc', 'FOV Acc'), ('official/dice', 'Official Dice'),
           ('official/se', 'Official Se'), ('official/sp', 'Official Sp'),
           ('official/acc', 'Official Acc'))
PANELS = ('loss', 'ce', 'mse', 'ssim', 'rmi', 'val/dice')
COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14),
           (23, 190, 207))
PANEL_W, PANEL_H, MARGIN = 420, 260, 44


class ReportError(Exception):
  """Bad input: printed as one `error:` line, exit 2."""


def parse_run(spec: str) -> tuple[str, list[str]]:
  """'LABEL=GLOB' -> (label, sorted run directories), or a ReportError naming the spec."""
  label, sep, pattern = spec.partition('=')
  if not sep or not label.strip() or not pattern:
    raise ReportError(f'--run {spec!r}: expected LABEL=GLOB')
  dirs = sorted(d for d in glob.glob(pattern)
                if os.path.isfile(os.path.join(d, 'metrics.jsonl')))
  if not dirs:
    raise ReportError(f'--run {spec!r}: no run directory (with metrics.jsonl) matches {pattern}')
  return label.strip(), dirs


def read_log(run_dir: str) -> list[dict]:
  path = os.path.join(run_dir, 'metrics.jsonl')
  rows = []
  with open(path, encoding='utf-8') as f:
    for n, line in enumerate(f, 1):
      if line.strip():
        try:
          rows.append(json.loads(line))
        except json.JSONDecodeError:
          raise ReportError(f'{path}: line {n} is not JSON') from None
  return rows


def read_run(run_dir: str, split: str) -> dict:
  """The run's test metrics, wall time (s), median training speed and log."""
  metrics_path = os.path.join(run_dir, 'eval', split, 'metrics.json')
  if not os.path.isfile(metrics_path):
    raise ReportError(f'{metrics_path} is missing: the run was not evaluated on {split!r}')
  with open(metrics_path, encoding='utf-8') as f:
    try:
      result = json.load(f)
    except json.JSONDecodeError:
      raise ReportError(f'{metrics_path} is not JSON') from None
  config_path = os.path.join(run_dir, 'config.json')
  wall = (os.path.getmtime(metrics_path) - os.path.getmtime(config_path)
          if os.path.isfile(config_path) else math.nan)
  log = read_log(run_dir)
  speeds = [r['images_per_s'] for r in log if 'images_per_s' in r]
  return {'dir': run_dir, 'metrics': result, 'wall_s': wall, 'log': log,
          'images_per_s': statistics.median(speeds) if speeds else math.nan}


def mean_std(values) -> tuple[float, float]:
  v = np.asarray([x for x in values if x is not None], np.float64)
  if v.size == 0:
    return math.nan, math.nan
  return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else math.nan)


def _fmt(mean: float, std: float, scale: float = 100.0, digits: int = 2) -> str:
  if math.isnan(mean):
    return '–'
  if math.isnan(std):
    return f'{scale * mean:.{digits}f}'
  return f'{scale * mean:.{digits}f} ± {scale * std:.{digits}f}'


def table(groups: dict, split: str) -> str:
  """Markdown: one row per label."""
  head = ['run', 'seeds', *(h for _, h in COLUMNS), 'train images/s', 'wall time (min)']
  lines = [f'Split `{split}`; metrics in %, mean ± std over seeds (sample std).', '',
           '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for label, runs in groups.items():
    cells = [label, str(len(runs))]
    for key, _ in COLUMNS:
      cells.append(_fmt(*mean_std([r['metrics'].get(key) for r in runs])))
    cells.append(_fmt(*mean_std([r['images_per_s'] for r in runs]), scale=1.0))
    cells.append(_fmt(*mean_std([r['wall_s'] / 60 for r in runs]), scale=1.0, digits=1))
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def run_lines(groups: dict) -> str:
  """One line per run: where it is and its own numbers (seeds may differ in speed and in
  what else shared the machine, which the table's mean hides)."""
  lines = ['Runs (FOV F1 and AUC-ROC in %, train images/s, wall time):']
  for label, runs in groups.items():
    for r in runs:
      m = r['metrics']
      f1, auc = (_fmt(m[k], math.nan) if m.get(k) is not None else '–'
                 for k in ('fov/f1', 'fov/auc_roc'))
      lines.append(f'- {label}: `{r["dir"]}`: F1 {f1}, AUC {auc}, '
                   f'{_fmt(r["images_per_s"], math.nan, scale=1.0)} images/s, '
                   f'{r["wall_s"] / 60:.1f} min')
  return '\n'.join(lines) + '\n'


def _series(log: list[dict], key: str) -> list[tuple[float, float]]:
  return [(float(r['step']), float(r[key])) for r in log
          if key in r and isinstance(r[key], (int, float)) and math.isfinite(r[key])]


def _nice(v: float) -> str:
  return f'{v:.3g}'


def draw_panel(draw, font, x0: int, y0: int, key: str, lines: list) -> None:
  """lines: (colour, [(step, value)]) drawn in the panel at (x0, y0)."""
  left, top = x0 + MARGIN, y0 + 22
  right, bottom = x0 + PANEL_W - 12, y0 + PANEL_H - 22
  draw.text((x0 + MARGIN, y0 + 4), key, fill=(0, 0, 0), font=font)
  draw.rectangle((left, top, right, bottom), outline=(0, 0, 0))
  points = [p for _, pts in lines for p in pts]
  if not points:
    draw.text((left + 8, top + 8), 'no data', fill=(120, 120, 120), font=font)
    return
  xs, ys = [p[0] for p in points], [p[1] for p in points]
  x_lo, x_hi = min(xs), max(xs)
  y_lo, y_hi = min(ys), max(ys)
  if x_hi == x_lo:
    x_hi = x_lo + 1
  if y_hi == y_lo:
    y_hi = y_lo + abs(y_lo) * 0.1 + 1e-6
  def to_px(p):
    return (left + (p[0] - x_lo) / (x_hi - x_lo) * (right - left),
            bottom - (p[1] - y_lo) / (y_hi - y_lo) * (bottom - top))
  draw.text((x0 + 2, top - 6), _nice(y_hi), fill=(0, 0, 0), font=font)
  draw.text((x0 + 2, bottom - 6), _nice(y_lo), fill=(0, 0, 0), font=font)
  draw.text((left, bottom + 4), _nice(x_lo), fill=(0, 0, 0), font=font)
  draw.text((right - 40, bottom + 4), f'step {_nice(x_hi)}', fill=(0, 0, 0), font=font)
  for colour, pts in lines:
    px = [to_px(p) for p in sorted(pts)]
    if len(px) == 1:
      x, y = px[0]
      draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
    else:
      draw.line(px, fill=colour, width=2)


def figure(groups: dict, path: str) -> None:
  """Loss parts and validation Dice against the step; one colour per label."""
  cols = 3
  rows = math.ceil(len(PANELS) / cols)
  legend_h = 20 * len(groups) + 10
  image = Image.new('RGB', (cols * PANEL_W, rows * PANEL_H + legend_h), 'white')
  draw = ImageDraw.Draw(image)
  font = ImageFont.load_default()
  colours = {label: COLOURS[i % len(COLOURS)] for i, label in enumerate(groups)}
  for i, (label, runs) in enumerate(groups.items()):
    y = 6 + 20 * i
    draw.line((10, y + 6, 40, y + 6), fill=colours[label], width=3)
    draw.text((48, y), f'{label} ({len(runs)} runs)', fill=(0, 0, 0), font=font)
  for n, key in enumerate(PANELS):
    x0, y0 = (n % cols) * PANEL_W, legend_h + (n // cols) * PANEL_H
    lines = [(colours[label], _series(r['log'], key))
             for label, runs in groups.items() for r in runs]
    draw_panel(draw, font, x0, y0, key, [(c, pts) for c, pts in lines if pts])
  image.save(path)


def build_report(specs: list[str], split: str, out_dir: str) -> dict:
  groups = {}
  for spec in specs:
    label, dirs = parse_run(spec)
    if label in groups:
      raise ReportError(f'--run {spec!r}: label {label!r} is given twice')
    groups[label] = [read_run(d, split) for d in dirs]
  os.makedirs(out_dir, exist_ok=True)
  md = table(groups, split)
  md += '\n![training curves](curves.png)\n\n' + run_lines(groups)
  with open(os.path.join(out_dir, 'accuracy.md'), 'w', encoding='utf-8') as f:
    f.write(md)
  figure(groups, os.path.join(out_dir, 'curves.png'))
  return groups


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  p.add_argument('--run', action='append', required=True, metavar='LABEL=GLOB',
                 help='run directories of one label (one per seed); repeat per label')
  p.add_argument('--split', default='test', help='the eval/<split> to tabulate')
  p.add_argument('--out', required=True, help='folder for accuracy.md and curves.png')
  args = p.parse_args(argv)
  try:
    build_report(args.run, args.split, args.out)
  except (ReportError, OSError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(open(os.path.join(args.out, 'accuracy.md'), encoding='utf-8').read())
  return 0


if __name__ == '__main__':
  sys.exit(main())
