"""Pictures of predictions: overlays, label maps, image grids, TensorBoard panels.

Colours, used everywhere (README "Evaluate and predict"): with a ground truth,
true positives are green, false positives red and false negatives blue,
blended over the image; without one, each predicted foreground class is tinted
with its own colour (class 1 green). Label maps are grey: class c of C is
c * (255 // (C - 1)), so binary masks are 0/255.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ds2f_jax import inference, input_pipeline
from ds2f_jax.models.ds2f import SEG_ONLY_VARIANTS

TP_COLOUR = (0, 255, 0)
FP_COLOUR = (255, 0, 0)
FN_COLOUR = (0, 96, 255)
CLASS_COLOURS = ((0, 255, 0), (255, 255, 0), (0, 255, 255), (255, 0, 255), (255, 128, 0),
                 (128, 128, 255))
OVERLAY_ALPHA = 0.6


def to_uint8(x: np.ndarray) -> np.ndarray:
  """A [-1, 1] image (the model's normalisation) as uint8."""
  return np.clip(np.rint((np.asarray(x, np.float32) + 1) * 127.5), 0, 255).astype(np.uint8)


def label_levels(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """Class ids -> uint8 grey levels c * (255 // (C - 1)); 0/255 for binary tasks."""
  step = 255 // (num_classes - 1)
  return (np.clip(np.asarray(labels), 0, num_classes - 1) * step).astype(np.uint8)


def grey_rgb(x: np.ndarray) -> np.ndarray:
  return np.repeat(np.asarray(x, np.uint8)[..., None], 3, axis=-1)


def probability_levels(p: np.ndarray, bits: int = 8) -> np.ndarray:
  """A probability map in [0, 1] as uint8 (bits=8) or uint16 (bits=16), rounded."""
  top = (1 << bits) - 1
  dtype = np.uint8 if bits == 8 else np.uint16
  return np.rint(np.clip(np.asarray(p, np.float32), 0, 1) * top).astype(dtype)


def _blend(image: np.ndarray, where: np.ndarray, colour) -> None:
  colour = np.asarray(colour, np.float32)
  image[where] = (1 - OVERLAY_ALPHA) * image[where] + OVERLAY_ALPHA * colour


def overlay(image: np.ndarray, pred: np.ndarray, gt: np.ndarray | None = None) -> np.ndarray:
  """uint8 RGB: errors against `gt` (TP green, FP red, FN blue), else classes tinted.

  For multi-class maps a foreground pixel of the wrong class counts as FP.
  """
  out = np.asarray(image, np.float32).copy()
  pred = np.asarray(pred)
  if gt is None:
    for c in range(1, int(pred.max(initial=0)) + 1):
      _blend(out, pred == c, CLASS_COLOURS[(c - 1) % len(CLASS_COLOURS)])
  else:
    gt = np.asarray(gt)
    if gt.shape != pred.shape:
      raise ValueError(f'overlay: ground truth {gt.shape} and prediction {pred.shape} differ')
    _blend(out, (pred == gt) & (gt > 0), TP_COLOUR)
    _blend(out, (pred > 0) & (pred != gt), FP_COLOUR)
    _blend(out, (gt > 0) & (pred == 0), FN_COLOUR)
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def save_png(path: str, array: np.ndarray) -> None:
  """uint8 grey/RGB or uint16 grey (a true 16-bit PNG) to `path`."""
  array = np.asarray(array)
  if array.dtype != np.uint16:
    array = array.astype(np.uint8)
  Image.fromarray(array).save(path, format='PNG')


def _tile(image: np.ndarray, height: int) -> Image.Image:
  img = Image.fromarray(image if image.ndim == 3 else grey_rgb(image))
  width = max(1, round(img.width * height / img.height))
  return img.resize((width, height), Image.BILINEAR)


def grid(rows, tile_height: int = 160, caption_height: int = 16, gap: int = 4) -> np.ndarray:
  """Rows of equal-height tiles with a caption above each row, as uint8 RGB.

  rows: list of (caption, [uint8 images (H, W[, 3])]); tiles keep their aspect.
  """
  if not rows:
    raise ValueError('grid: no rows to draw')
  tiles = [[_tile(np.asarray(im), tile_height) for im in images] for _, images in rows]
  width = max(sum(t.width for t in row) + gap * (len(row) - 1) for row in tiles)
  band = caption_height + tile_height + gap
  canvas = Image.new('RGB', (width, band * len(rows)), (24, 24, 24))
  draw = ImageDraw.Draw(canvas)
  font = ImageFont.load_default()
  for r, ((caption, _), row) in enumerate(zip(rows, tiles)):
    y = r * band
    draw.text((2, y + 2), caption, fill=(235, 235, 235), font=font)
    x = 0
    for t in row:
      canvas.paste(t, (x, y + caption_height))
      x += t.width + gap
  return np.asarray(canvas)


# ----------------------------------------------------------------------------
# TensorBoard panels of training-time evaluation.

_PANEL_CACHE = {}


def _panel_examples(config, count: int) -> dict:
  """The first `count` examples of data.eval_split as HR/LR pairs (cached per process).

  For seg_only / seg_hr the pair is at the network's own size, as in validation.
  """
  d = config.data
  variant = config.model.variant
  key = (d.name, d.config, d.data_dir, d.eval_split, tuple(d.hr_size), config.model.upscale,
         variant, count)
  if key not in _PANEL_CACHE:
    source = input_pipeline.split_source(config, d.eval_split, 'data.eval_split')
    examples = [input_pipeline.make_example(source[i], d.hr_size, config.model.upscale,
                                            variant=variant)
                for i in range(min(count, len(source)))]
    _PANEL_CACHE[key] = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
  return _PANEL_CACHE[key]


def validation_panels(config, model, variables) -> dict:
  """name -> uint8 (N, H, W, 3): LR input, SR output, HR prediction, ground truth, errors.

  `variables` may be the full training variables; the inference subset runs
  in batches of the eval batch size, the program `--mode eval` compiles too.
  """
  count = int(config.eval.num_images_tb)
  if count <= 0:
    return {}
  batch = _panel_examples(config, count)
  n = len(batch['lr'])
  if not n:
    return {}
  c = config.model.num_classes
  with_sr = config.model.variant not in SEG_ONLY_VARIANTS
  variables = inference.select_variables(config, model, variables, with_sr)
  batch_size = int(config.eval.batch_size or config.batch_size)
  probs, sr = [], []
  for start in range(0, n, batch_size):
    lr = inference.stack_padded(list(batch['lr'][start:start + batch_size]), batch_size)
    p, s = inference.predict_probs(model, variables, lr, with_sr=with_sr)
    probs.append(np.asarray(p))
    sr.append(None if s is None else np.asarray(s))
  pred = np.argmax(np.concatenate(probs)[:n], axis=-1)
  sr = None if sr[0] is None else np.concatenate(sr)[:n]
  hr = to_uint8(batch['hr'])
  panels = {'1_lr_input': to_uint8(batch['lr'])}
  if sr is not None:
    panels['2_sr_output'] = to_uint8(np.asarray(sr))
  panels['3_hr_prediction'] = grey_rgb(label_levels(pred, c))
  panels['4_ground_truth'] = grey_rgb(label_levels(batch['mask'], c))
  panels['5_errors'] = np.stack([overlay(h, p, g) for h, p, g in zip(hr, pred, batch['mask'])])
  return {f'val_images/{k}': v for k, v in panels.items()}


def write_validation_images(config, model, state, writer, step: int) -> None:
  """TensorBoard panels for `config.eval.num_images_tb` fixed validation images."""
  if not writer.enabled or config.eval.num_images_tb <= 0:
    return
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  writer.write_images(step, validation_panels(config, model, variables))
