"""`--mode predict`: masks for arbitrary image files at their original resolution.

For each input image NAME.EXT (PNG, JPEG, TIFF, GIF, PPM/PGM/PNM, BMP) writes
into the output folder:

* NAME_prob.png: the foreground probability as a 16-bit grey PNG (p * 65535);
  with more than two classes, one NAME_prob_<class>.png per foreground class;
* NAME_mask.png: the argmax label map, class c stored as c * (255 // (C - 1))
  (0/255 for binary tasks);
* NAME_overlay.png: the prediction over the image; when a ground-truth mask is
  given (`--mask`), its errors instead: TP green, FP red, FN blue.

Inputs sharing a NAME (a.png, a.jpg) write NAME_EXT_* instead; two inputs
that would still write one file are refused before anything is written
(`output_names`).

Inputs are read with Pillow and converted to RGB: grey images are repeated
over three channels, the alpha channel of RGBA/LA images is dropped, palette
images are expanded, 16-bit grey images are scaled to 8 bits; GIF and TIFF use
their first frame. `--mask` is a file when `--input` is a file, and a folder
when it is a folder: the mask of NAME.EXT is the file of that folder with the
same NAME (any image extension). Binary masks may be 0/1, 0/255 or any other
two-level encoding; multi-class masks must hold class ids.

An unreadable image (or mask) is reported by name and skipped; the others are
still written, and the returned `failed` dict makes `main.py` exit non-zero.
"""

from __future__ import annotations

import io
import os

import jax
import numpy as np
from absl import logging
from PIL import Image

from ds2f_jax import imaging, inference, reporting, visualize

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.gif', '.ppm', '.pgm', '.pnm',
                    '.bmp')
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def list_images(path: str) -> list[str]:
  """The image file itself, or the image files of a folder (sorted, hidden ones skipped)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'--input {path} does not exist')
  if os.path.isfile(path):
    return [path]
  files = sorted(os.path.join(path, n) for n in os.listdir(path)
                 if not n.startswith('.') and n.lower().endswith(IMAGE_EXTENSIONS)
                 and os.path.isfile(os.path.join(path, n)))
  if not files:
    raise ValueError(f'--input {path} holds no image files ({", ".join(IMAGE_EXTENSIONS)})')
  return files


def _open(path: str) -> Image.Image:
  name = os.path.basename(path)
  try:
    with open(path, 'rb') as f:
      data = f.read()
    img = Image.open(io.BytesIO(data))
    img.load()  # Pillow decodes lazily: truncated files fail only here.
  except Image.UnidentifiedImageError:
    raise ValueError(f'{name}: not an image file Pillow can read') from None
  except _DECODE_ERRORS as e:
    raise ValueError(f'{name}: cannot read image ({e})') from None
  return img


def read_rgb(path: str) -> np.ndarray:
  """Any supported image file as uint8 RGB (H, W, 3); see the module docstring.

  Any size is accepted that serving accepts too (`imaging.check_image_size`):
  the image is resized to the network input whatever its size.
  """
  img = _open(path)
  imaging.check_image_size(img.size[::-1], os.path.basename(path))
  if img.mode.startswith('I;16') or img.mode == 'I':
    grey = np.asarray(img).astype(np.float64)
    grey = np.clip(np.rint(grey / 257.0), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)
  if img.mode == 'F':
    raise ValueError(f'{os.path.basename(path)}: floating-point images are not supported')
  return np.asarray(img.convert('RGB'), np.uint8)


def read_mask(path: str, num_classes: int) -> np.ndarray:
  """A ground-truth mask as class ids (H, W) uint8."""
  name = os.path.basename(path)
  img = _open(path)
  if img.mode in ('P', 'PA', 'RGB', 'RGBA', 'RGBX', 'CMYK', 'YCbCr'):
    arr = np.asarray(img.convert('RGB')).max(axis=-1)  # Coloured labels: brightest channel.
  elif img.mode in ('L', 'LA'):
    arr = np.asarray(img.convert('L'))
  else:
    arr = np.asarray(img)
  if num_classes == 2:
    values = np.unique(arr)
    if values.size <= 2 and values[0] == 0:
      return (arr > 0).astype(np.uint8)
    half = 0.5 if values[-1] <= 1 else 128 if values[-1] <= 255 else 32768
    return (arr >= half).astype(np.uint8)  # JPEG noise or anti-aliased edges.
  if arr.max(initial=0) >= num_classes:
    raise ValueError(f'{name}: mask values must be class ids 0..{num_classes - 1}, found '
                     f'{int(arr.max())}')
  return arr.astype(np.uint8)


def find_mask(mask_path: str | None, image_path: str, input_is_dir: bool) -> str | None:
  """The mask file for an image: --mask itself, or the same-stem file in the --mask folder."""
  if mask_path is None:
    return None
  if not input_is_dir:
    if not os.path.isfile(mask_path):
      raise FileNotFoundError(f'--mask {mask_path} is not a file (--input is a file)')
    return mask_path
  stem = os.path.splitext(os.path.basename(image_path))[0]
  for n in sorted(os.listdir(mask_path)):
    s, ext = os.path.splitext(n)
    if s == stem and ext.lower() in IMAGE_EXTENSIONS:
      return os.path.join(mask_path, n)
  return None


def output_files(stem: str, class_names) -> dict:
  """The files written for an input with output stem `stem`: {'prob': {class: file},
  'mask': file, 'overlay': file}."""
  c = len(class_names)
  probs = ({1: f'{stem}_prob.png'} if c == 2 else
           {k: f'{stem}_prob_{class_names[k]}.png' for k in range(1, c)})
  return {'prob': probs, 'mask': f'{stem}_mask.png', 'overlay': f'{stem}_overlay.png'}


def output_names(files: list[str], class_names) -> dict[str, dict]:
  """{input path: its `output_files`}, no file claimed by two inputs.

  NAME.EXT writes NAME_*.png; where two inputs share a NAME (a.png and a.jpg)
  each writes NAME_EXT_*.png. That can still meet another input's names
  (a_png.png, or a class name ending like another suffix), and on a
  case-insensitive file system A.png and a.png meet too. Such a collision is
  refused before anything is written, naming both inputs, rather than renamed
  again: a name the user did not choose would be hard to find, and a
  silently replaced output is a lost result.
  """
  stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
  out, owner = {}, {}
  for f, stem in zip(files, stems):
    if stems.count(stem) > 1:
      stem = os.path.basename(f).replace('.', '_')
    out[f] = output_files(stem, class_names)
    for name in [*out[f]['prob'].values(), out[f]['mask'], out[f]['overlay']]:
      other = owner.setdefault(name.casefold(), f)
      if other != f:
        raise ValueError(f'--input: {os.path.basename(other)} and {os.path.basename(f)} would '
                         f'both write {name}; rename one of them (nothing was written)')
  return out


def _prepare_output(output_dir: str) -> str:
  output_dir = os.path.abspath(output_dir)
  try:
    os.makedirs(output_dir, exist_ok=True)
  except OSError as e:
    raise PermissionError(f'--output {output_dir} cannot be created: {e.strerror}') from None
  if not os.access(output_dir, os.W_OK):
    raise PermissionError(f'--output {output_dir} is not writable')
  return output_dir


def predict(config, workdir: str, input_path: str, output_dir: str,
            mask_path: str | None = None) -> dict:
  """Writes prob/mask/overlay PNGs for every input image.

  Returns {'written': [image paths], 'failed': {file name: reason}}.
  """
  if not input_path:
    raise ValueError('--input is required for --mode predict')
  if not output_dir:
    raise ValueError('--output is required for --mode predict')
  files = list_images(input_path)
  input_is_dir = os.path.isdir(input_path)
  if mask_path is not None and not os.path.exists(mask_path):
    raise FileNotFoundError(f'--mask {mask_path} does not exist')
  if mask_path is not None and input_is_dir and not os.path.isdir(mask_path):
    raise ValueError(f'--mask {mask_path} must be a folder when --input is a folder')
  names = inference.class_names(config)
  outputs = output_names(files, names)
  output_dir = _prepare_output(output_dir)
  restored = inference.restore(config, workdir, config.eval.checkpoint)
  num_classes = int(config.model.num_classes)
  size = inference.lr_size(config)
  batch_size = int(config.eval.batch_size or config.batch_size)

  written, failed = [], {}

  def fail(path, reason):
    failed[os.path.basename(path)] = reason
    logging.error('%s', reason)

  progress = reporting.Progress(len(files), desc='predict', unit='image')

  def readable(paths):
    for path in paths:
      try:
        image = read_rgb(path)
      except ValueError as e:
        fail(path, f'{e}; skipped')
        progress.advance(1)
        continue
      yield path, image

  for chunk in inference.chunks(readable(files), batch_size):
    lr = inference.stack_padded([imaging.bicubic_normalised(im, size) for _, im in chunk],
                                batch_size)
    probs, _ = inference.predict_probs(restored.model, restored.variables, lr)
    probs = np.asarray(jax.device_get(probs))
    for (path, image), p in zip(chunk, probs):
      p = imaging.resize_nearest(p, image.shape[:2])
      pred = np.argmax(p, axis=-1)
      gt = None
      mask_file = find_mask(mask_path, path, input_is_dir)
      if mask_path is not None and mask_file is None:
        logging.warning('%s: no mask with the same name in %s; overlay without errors',
                        os.path.basename(path), mask_path)
      if mask_file is not None:
        try:
          gt = read_mask(mask_file, num_classes)
          if gt.shape != pred.shape:
            raise ValueError(f'{os.path.basename(mask_file)}: mask is {gt.shape[1]}x'
                             f'{gt.shape[0]} but the image is {pred.shape[1]}x{pred.shape[0]}')
        except ValueError as e:
          fail(mask_file, f'{e}; overlay of {os.path.basename(path)} written without errors')
          gt = None
      out = outputs[path]
      for c, name in out['prob'].items():
        visualize.save_png(os.path.join(output_dir, name),
                           visualize.probability_levels(p[..., c], 16))
      visualize.save_png(os.path.join(output_dir, out['mask']),
                         visualize.label_levels(pred, num_classes))
      visualize.save_png(os.path.join(output_dir, out['overlay']),
                         visualize.overlay(image, pred, gt))
      written.append(path)
    progress.advance(len(chunk))
  progress.close()
  logging.info('Wrote predictions for %d of %d images to %s.', len(written), len(files),
               output_dir)
  return {'written': written, 'failed': failed}

