"""Segmentation from an export directory, with JAX and NumPy alone.

`ds2f_jax.export` writes `W/export/`; this module serves it without the
training code, flax, optax, orbax, TensorFlow (Datasets) or grain, so a serving
image needs only `jax`, `numpy` and (for files) `pillow`:

  predictor = Predictor.load('W/export')          # sha256 of every file checked
  result = predictor.predict(rgb_uint8_image)     # any size
  result.probs  # (H, W, C) float32 class probabilities at the image's size
  result.mask   # (H, W) uint8 class ids

  python -m ds2f_jax.serving W/export a.png b.jpg --output out/

Each image goes through the rules of `ds2f_jax.imaging`, as in training and
`--mode predict`: bicubic resize (OpenCV INTER_CUBIC semantics) of the original
to the model's input size, then x / 255 * 2 - 1. The exported model returns
probabilities (at HR = LR x r for DS2F, at the input size for the
segmentation-only baselines); they are resized back to the image's own size by
PyTorch's legacy nearest rule (`imaging.nearest_indices`, the official
evaluation's), and the mask is their argmax. Any image
with at least one pixel per side is accepted. Serving needs a JAX at least as
new as the one that exported (`export_info.json` records it).

`export_info.json` must list every file with its sha256 (`files`); a missing or
malformed manifest, or an entry outside the export folder, is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
import hashlib
import json
import os
import re
import sys
from typing import Any, NamedTuple

import jax
import numpy as np

from ds2f_jax import imaging, msgpack_params

INFO_FILE = 'export_info.json'
EXPORTED_FILE = 'model.jax_exported'
PARAMS_FILE = 'params.msgpack'
PARAMS_CHECKPOINT = 'params'  # An orbax checkpoint of the same tree (for JAX users).
FORMAT = 'ds2f_jax.export'
FORMAT_VERSION = 1

# Overlay colours of classes 1, 2, ... (class 0 is the background, left as is).
PALETTE = ((0, 255, 0), (255, 0, 0), (0, 128, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255))


class Prediction(NamedTuple):
  probs: np.ndarray  # (H, W, C) float32, at the input image's size.
  mask: np.ndarray  # (H, W) uint8 class ids: argmax of probs.


def sha256_file(path: str) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  return h.hexdigest()


def _version(text: str) -> tuple[int, ...]:
  """'0.10.2' -> (0, 10, 2); a version it cannot read counts as the oldest."""
  parts = re.match(r'\d+(?:\.\d+)*', str(text))
  return tuple(int(p) for p in parts.group(0).split('.')) if parts else ()


def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__


def load_info(export_dir: str) -> dict:
  """export_info.json, checked for every key serving reads (one line naming the file and key)."""
  path = os.path.join(export_dir, INFO_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path} not found: {export_dir} is not an export directory '
                            '(python main.py --mode export writes one)')
  try:
    with open(path, encoding='utf-8') as f:
      info = json.load(f)
  except (ValueError, UnicodeDecodeError, RecursionError) as e:
    raise ValueError(f'{path} is not valid JSON: {_first_line(e)}') from None
  if not isinstance(info, dict):
    raise ValueError(f'{path}: expected a JSON object, got {type(info).__name__}')
  if info.get('format') != FORMAT or info.get('format_version') != FORMAT_VERSION:
    raise ValueError(f'{path}: format {info.get("format")!r} version '
                     f'{info.get("format_version")!r} is not {FORMAT!r} version {FORMAT_VERSION}')
  _check_info(path, info)
  return info


def _check_info(path: str, info: dict) -> None:
  def get(key: str):
    node = info
    for k in key.split('.'):
      if not isinstance(node, dict) or k not in node:
        raise ValueError(f'{path}: {key} is missing; the file is damaged or hand-edited: '
                         're-export the model')
      node = node[k]
    return node

  def positive_ints(key: str, n: int | None) -> None:
    v = get(key)
    v = [v] if n is None else v
    if (not isinstance(v, list) or (n is not None and len(v) != n)
        or not all(type(x) is int and x >= 1 for x in v)):
      what = 'a positive integer' if n is None else f'a list of {n} positive integers'
      raise ValueError(f'{path}: {key} must be {what}, got {get(key)!r}')

  positive_ints('input.lr_size', 2)
  positive_ints('input.min_lr_side', None)
  positive_ints('model.upscale', None)
  names = get('class_names')
  if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names):
    raise ValueError(f'{path}: class_names must be a list of at least 2 strings, got {names!r}')
  files = get('files')
  if not isinstance(files, dict) or not all(
      isinstance(v, str) and re.fullmatch('[0-9a-f]{64}', v) for v in files.values()):
    raise ValueError(f'{path}: files must map each file to its sha256 (64 hex digits)')
  for required in (EXPORTED_FILE, PARAMS_FILE):
    if required not in files:
      raise ValueError(f'{path}: files does not list {required}: the export cannot be verified; '
                       're-export the model')


def check_manifest(export_dir: str, files: dict[str, str]) -> None:
  """Every entry of `files` names a file inside export_dir (no absolute path, '..' or link out)."""
  root = os.path.realpath(export_dir)
  info = os.path.join(export_dir, INFO_FILE)
  for rel in files:
    target = os.path.realpath(os.path.join(root, rel))
    if os.path.isabs(rel) or os.path.commonpath([root, target]) != root or target == root:
      raise ValueError(f'{info}: files entry {rel!r} points outside {export_dir}; refused')


def verify_files(export_dir: str, files: dict[str, str]) -> None:
  """Every file listed in export_info.json exists with its recorded sha256."""
  check_manifest(export_dir, files)
  for rel, expected in sorted(files.items()):
    path = os.path.join(export_dir, rel)
    if not os.path.isfile(path):
      raise FileNotFoundError(f'{path} is missing (listed in {INFO_FILE}); re-export the model')
    got = sha256_file(path)
    if got != expected:
      raise ValueError(f'{path}: sha256 mismatch (expected {expected[:16]}..., got {got[:16]}...):'
                       ' the file changed or is corrupt; re-export or copy it again')


def load_image(path: str) -> np.ndarray:
  """An image file as (H, W, 3) uint8 RGB.

  Pillow converts other modes (greyscale, palette, RGBA, CMYK) to RGB; an alpha
  channel is dropped. Arrays given to `Predictor` directly are not converted.
  """
  from PIL import Image, UnidentifiedImageError  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as img:
      return np.asarray(img.convert('RGB'))
  except FileNotFoundError:
    raise FileNotFoundError(f'image {path} not found') from None
  except (UnidentifiedImageError, OSError) as e:
    raise ValueError(f'{path}: not an image Pillow can read ({_first_line(e)})') from None


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
  """The image with every non-background class tinted in its PALETTE colour."""
  out = image.astype(np.float32)
  for c in range(1, int(mask.max(initial=0)) + 1):
    colour = np.asarray(PALETTE[(c - 1) % len(PALETTE)], np.float32)
    sel = mask == c
    out[sel] = (1 - alpha) * out[sel] + alpha * colour
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)


class Predictor:
  """The exported DS2F segmentation path with its parameters, ready to call."""

  def __init__(self, exported: jax.export.Exported, variables: Any, info: dict):
    self.exported = exported
    self.info = info
    self.variables = jax.device_put(variables)
    self._call = jax.jit(exported.call)

  @classmethod
  def load(cls, export_dir: str, verify: bool = True) -> Predictor:
    """Reads `export_dir`, checking each file's sha256 first (unless verify=False)."""
    info = load_info(export_dir)
    check_manifest(export_dir, info['files'])
    if verify:
      verify_files(export_dir, info['files'])
    path = os.path.join(export_dir, EXPORTED_FILE)
    with open(path, 'rb') as f:
      blob = f.read()
    try:
      exported = jax.export.deserialize(bytearray(blob))
    except Exception as e:  # pylint: disable=broad-except
      versions = info.get('versions')
      made_by = str(versions.get('jax', '?')) if isinstance(versions, dict) else '?'
      if _version(jax.__version__) < _version(made_by):
        raise ValueError(f'{path}: jax {jax.__version__} cannot load this artifact (exported with '
                         f'jax {made_by}; serving needs a jax at least as new): '
                         f'{_first_line(e)}') from None
      raise ValueError(f'{path}: not a readable jax.export artifact, so the file is corrupt or '
                       f'not written by --mode export ({_first_line(e)}): re-export or copy it '
                       'again') from None
    path = os.path.join(export_dir, PARAMS_FILE)
    with open(path, 'rb') as f:
      try:
        variables = msgpack_params.loads(f.read())
      except ValueError as e:
        raise ValueError(f'{path}: unreadable parameters ({_first_line(e)})') from None
    _check_variables(path, variables, exported)
    return cls(exported, variables, info)

  @property
  def lr_size(self) -> tuple[int, int]:
    """(height, width) of the network input in training; images are resized to it by default."""
    return tuple(self.info['input']['lr_size'])

  @property
  def upscale(self) -> int:
    return int(self.info['model']['upscale'])

  @property
  def min_lr_side(self) -> int:
    return int(self.info['input']['min_lr_side'])

  @property
  def class_names(self) -> tuple[str, ...]:
    return tuple(self.info['class_names'])

  def predict_lr(self, lr: np.ndarray) -> np.ndarray:
    """(B, h, w, 3) float32 in [-1, 1] -> (B, h*r, w*r, C) probabilities: the raw model."""
    lr = np.asarray(lr, np.float32)
    if lr.ndim != 4 or lr.shape[-1] != 3:
      raise ValueError(f'predict_lr: expected a (batch, height, width, 3) LR batch, got shape '
                       f'{lr.shape}')
    self._check_lr_size(lr.shape[1:3])
    return np.asarray(self._call(self.variables, lr))

  def check_image(self, image: np.ndarray, name: str = 'image',
                  lr_size: Sequence[int] | None = None) -> np.ndarray:
    """The image as an (H, W, 3) uint8 array, or a one-line error naming it."""
    image = np.asarray(image)
    self._lr_size(lr_size)
    if image.dtype != np.uint8:
      raise ValueError(f'{name}: expected uint8 RGB values (0..255), got dtype {image.dtype}')
    channels = 1 if image.ndim == 2 else image.shape[-1] if image.ndim == 3 else None
    if channels == 1:
      raise ValueError(f'{name} has 1 channel (shape {image.shape}); the model takes RGB: '
                       'repeat it, e.g. np.repeat(image[..., None], 3, -1) for (H, W)')
    if channels == 4:
      raise ValueError(f'{name} has 4 channels (shape {image.shape}); the model takes RGB: '
                       'drop the alpha channel, image[..., :3]')
    if channels != 3:
      raise ValueError(f'{name}: expected an (H, W, 3) RGB image, got shape {image.shape}')
    imaging.check_image_size(image.shape, name)
    return image

  def preprocess(self, image: np.ndarray, lr_size: Sequence[int] | None = None) -> np.ndarray:
    """uint8 (H, W, 3) -> the model's float32 input: bicubic to lr_size, x/255*2-1."""
    return imaging.bicubic_normalised(self.check_image(image, lr_size=lr_size),
                                      self._lr_size(lr_size))

  def predict(self, image: np.ndarray, lr_size: Sequence[int] | None = None) -> Prediction:
    """One (H, W, 3) uint8 RGB image -> probabilities and mask at (H, W)."""
    return self._predict([self.check_image(image, 'image', lr_size)], lr_size, 1)[0]

  def predict_batch(self, images: Sequence[np.ndarray] | np.ndarray,
                    lr_size: Sequence[int] | None = None,
                    batch_size: int | None = None) -> list[Prediction]:
    """Images of any sizes -> one Prediction each, `batch_size` images per model call.

    Every image is resized to the same LR size, so they share calls; each
    distinct (batch, LR size) compiles once.
    """
    if isinstance(images, np.ndarray) and images.ndim == 3:
      raise ValueError(f'predict_batch takes a list of images or a (N, H, W, 3) array, got shape '
                       f'{images.shape}: use predict() for one image')
    images = [self.check_image(im, f'image {i}', lr_size) for i, im in enumerate(images)]
    return self._predict(images, lr_size, batch_size or max(len(images), 1))

  def _predict(self, images: list[np.ndarray], lr_size, batch_size: int) -> list[Prediction]:
    size = self._lr_size(lr_size)
    if int(batch_size) < 1:
      raise ValueError(f'batch_size={batch_size} must be >= 1')
    batch_size = int(batch_size)
    out = []
    for start in range(0, len(images), batch_size):
      chunk = images[start:start + batch_size]
      lr = np.stack([self.preprocess(im, size) for im in chunk])
      for im, probs in zip(chunk, self.predict_lr(lr)):
        probs = imaging.resize_nearest(probs, im.shape[:2])
        out.append(Prediction(probs, np.argmax(probs, axis=-1).astype(np.uint8)))
    return out

  def _lr_size(self, lr_size) -> tuple[int, int]:
    if lr_size is None:
      return self.lr_size
    size = tuple(int(s) for s in lr_size)
    if len(size) != 2:
      raise ValueError(f'lr_size={tuple(lr_size)} must be (height, width)')
    self._check_lr_size(size)
    return size

  def _check_lr_size(self, size) -> None:
    if min(size) < self.min_lr_side:
      raise ValueError(f'LR input {tuple(size)} is too small for the exported model: each side '
                       f'must be >= {self.min_lr_side}')


def _check_variables(path: str, variables: Any, exported: jax.export.Exported) -> None:
  """The parameter tree is the one the artifact was lowered for."""
  try:
    tree = jax.tree_util.tree_structure(((variables, 0), {}))
  except TypeError as e:
    raise ValueError(f'{path}: not a parameter tree ({_first_line(e)})') from None
  if tree != exported.in_tree:
    raise ValueError(f'{path}: its parameter tree does not match {EXPORTED_FILE}')
  for leaf, aval in zip(jax.tree_util.tree_leaves(variables), exported.in_avals):
    if not isinstance(leaf, np.ndarray):
      raise ValueError(f'{path}: a parameter is a {type(leaf).__name__}, not an array')
    if tuple(leaf.shape) != tuple(aval.shape) or leaf.dtype != aval.dtype:
      raise ValueError(f'{path}: a parameter of shape {leaf.shape} {leaf.dtype} where '
                       f'{EXPORTED_FILE} expects {aval.shape} {aval.dtype}')


def main(argv: Sequence[str] | None = None) -> int:
  """python -m ds2f_jax.serving EXPORT_DIR IMAGE... --output DIR."""
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(
      prog='python -m ds2f_jax.serving',
      description='Segment images with an exported DS2F model. Writes NAME_mask.png (class ids), '
                  'NAME_overlay.png and, with --save-probs, NAME_probs.npy per image.')
  parser.add_argument('export_dir', help='W/export, written by main.py --mode export')
  parser.add_argument('images', nargs='+', help='image files (converted to RGB by Pillow)')
  parser.add_argument('--output', required=True, help='where the results go (created)')
  parser.add_argument('--batch-size', type=int, default=8, help='images per model call')
  parser.add_argument('--lr-size', type=int, nargs=2, metavar=('H', 'W'), default=None,
                      help='model input size (default: the training LR size)')
  parser.add_argument('--save-probs', action='store_true', help='also write probabilities')
  args = parser.parse_args(argv)
  try:
    from PIL import Image  # pylint: disable=g-import-not-at-top
    predictor = Predictor.load(args.export_dir)
    images = [predictor.check_image(load_image(p), p, args.lr_size) for p in args.images]
    stems = [os.path.splitext(os.path.basename(p))[0] for p in args.images]
    seen = {}
    for path, stem in zip(args.images, stems):  # casefold: also on case-insensitive disks.
      other = seen.setdefault(stem.casefold(), path)
      if other != path:
        raise ValueError(f'{other} and {path} would both write {stem}_mask.png; rename one '
                         '(nothing was written)')
    os.makedirs(args.output, exist_ok=True)
    results = predictor.predict_batch(images, args.lr_size, args.batch_size)
    for path, stem, image, result in zip(args.images, stems, images, results):
      base = os.path.join(args.output, stem)
      Image.fromarray(result.mask).save(base + '_mask.png')
      Image.fromarray(overlay(image, result.mask)).save(base + '_overlay.png')
      if args.save_probs:
        np.save(base + '_probs.npy', result.probs)
      share = np.bincount(result.mask.ravel(), minlength=len(predictor.class_names))
      share = ', '.join(f'{n} {s / result.mask.size:.1%}'
                        for n, s in zip(predictor.class_names, share))
      print(f'{path} -> {base}_mask.png ({share})')
  except (ValueError, FileNotFoundError, OSError) as e:
    print(f'error: {_first_line(e)}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
