"""TFDS data source → DS2F HR/LR pairs → grain batches, without TensorFlow.

Datasets are TFDS builders under `ds2f_jax/datasets/<name>/`, prepared as array_record
files and read by random access (`builder.as_data_source`). Training batches
form a grain `MapDataset` indexed by the global step: batch `k` is a pure
function of (config, k), so resuming at step `k` needs no iterator state.

Every example becomes the pair of docs/method.md §Data pipeline (D9-D11):
augment at the original resolution, then HR = bicubic resize of the augmented
original to `data.hr_size` (mask and FOV nearest), LR = bicubic resize of the
same augmented original to `hr_size / r`, both normalised to [-1, 1].

The segmentation-only baselines (`model.variant` seg_only / seg_hr) have no x r
step, so their examples hold the network input as 'lr' and the mask at the
output size, which is the input size (docs/method.md D14): seg_only sees the LR
image with the mask nearest-resized to LR, seg_hr the HR image with the HR mask.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
import importlib
import os
import pathlib
import threading
from typing import Any

import grain
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from ds2f_jax import augment, imaging, reporting

# Independent random streams derived from config.seed.
_SHUFFLE_STREAM = 0
_AUGMENT_STREAM = 1


# ----------------------------------------------------------------------------
# Builders.


# The builders' package: inside ds2f_jax, so that installing the project adds no
# top-level `datasets` package (Hugging Face's has that name).
_DATASETS = 'ds2f_jax.datasets'


def _datasets_dir() -> pathlib.Path:
  return pathlib.Path(importlib.import_module(_DATASETS).__file__).parent


def available_datasets() -> list[str]:
  """Names of the dataset folders (TFDS builders) under ds2f_jax/datasets/."""
  root = _datasets_dir()
  return sorted(
      p.name
      for p in root.iterdir()
      if p.is_dir() and (p / '__init__.py').exists()
  )


def get_builder(
    data_cfg: ml_collections.ConfigDict,
) -> tfds.core.DatasetBuilder:
  """The TFDS builder of `data.name`, imported from ds2f_jax/datasets/ to register."""
  name = data_cfg.name
  names = available_datasets()
  if name not in names:
    raise ValueError(
        f'data.name {name!r} is not a dataset under {_datasets_dir()};'
        f' available: {", ".join(names)}.'
    )
  importlib.import_module(f'{_DATASETS}.{name}')
  return tfds.builder(
      name, data_dir=data_cfg.data_dir or None, config=data_cfg.config or None
  )


def prepare(data_cfg: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The builder, prepared as array_record (built now if it is not yet)."""
  builder = get_builder(data_cfg)
  if not builder.is_prepared():
    reporting.note(f'Preparing {builder.name} in {builder.data_dir} (once; later runs reuse it).')
    builder.download_and_prepare(
        file_format='array_record',
        download_config=tfds.download.DownloadConfig(
            manual_dir=data_cfg.manual_dir or None
        ),
    )
  return builder


# ----------------------------------------------------------------------------
# Splits.

# The hold-out carved from train never depends on config.seed: changing the
# training seed must not move images between train and validation.
_CARVE_SEED = 0


class _Subset(Sequence):
  """A random-access view of some records of a data source."""

  def __init__(self, source, indices: np.ndarray):
    self._source, self._indices = source, indices

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, i):
    return self._source[int(self._indices[i])]


class DecodedCache(Sequence):
  """Records of a source, kept decoded in memory once read, up to `max_bytes`.

  PNG decoding is the largest per-example cost of the training pipeline (about
  half of it at CHASE_DB1's size), and training reads each image hundreds of
  times. Records are cached in the order first read until the budget is spent;
  later ones are decoded on every read. Cached arrays are read-only, so an
  in-place edit downstream raises instead of changing the next epoch's data.
  """

  def __init__(self, source, max_bytes: int):
    self._source, self._max_bytes = source, int(max_bytes)
    self._records: dict[int, dict[str, Any]] = {}
    self._bytes = 0
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return len(self._source)

  @property
  def cached_bytes(self) -> int:
    return self._bytes

  def __getitem__(self, i):
    i = int(i)
    record = self._records.get(i)
    if record is not None:
      return record
    record = self._source[i]
    if self._bytes >= self._max_bytes:
      return record
    record = {k: np.asarray(v) for k, v in record.items()}
    size = sum(v.nbytes for v in record.values())
    with self._lock:
      if i in self._records or self._bytes + size > self._max_bytes:
        return self._records.get(i, record)
      for v in record.values():
        v.flags.writeable = False
      self._records[i] = record
      self._bytes += size
    return record


def cache_bytes(data_cfg: ml_collections.ConfigDict) -> int:
  """`data.cache_mb` in bytes (checked)."""
  mb = data_cfg.cache_mb
  if isinstance(mb, bool) or not isinstance(mb, (int, float)) or not mb >= 0:
    raise ValueError(f'data.cache_mb must be a number >= 0 (0 = no cache), got {mb!r}.')
  return int(mb * 2**20)


def _carved(config: ml_collections.ConfigDict, builder) -> bool:
  """True when the eval split is not in the dataset and is carved from train."""
  return (config.data.eval_split not in builder.info.splits
          and config.data.eval_split == 'validation')


def split_source(config: ml_collections.ConfigDict, split: str, key: str = 'split'):
  """The records of `split`. Datasets without a 'validation' split get one
  carved from train: a fixed-seed `data.val_fraction` of it, which the train
  split then excludes (the test split is never touched). Unknown or empty
  splits are one-line errors naming `key`."""
  builder = prepare(config.data)
  carve = _carved(config, builder)
  if not carve or split not in ('validation', config.data.train_split):
    return data_source(config.data, split, key)
  train = data_source(config.data, config.data.train_split, 'data.train_split')
  fraction = float(config.data.val_fraction)
  if not 0 < fraction < 1:
    raise ValueError(f'data.val_fraction={fraction} must be in (0, 1).')
  n_val = min(max(1, round(fraction * len(train))), len(train) - 1)
  order = np.random.default_rng(_CARVE_SEED).permutation(len(train))
  picked = np.sort(order[:n_val] if split == 'validation' else order[n_val:])
  return _Subset(train, picked)


# ----------------------------------------------------------------------------
# One example.


def make_example(
    record: Mapping[str, Any],
    hr_size: Sequence[int],
    upscale: int,
    rng: np.random.Generator | None = None,
    variant: str = 'ds2f',
    *,
    num_classes: int | None = None,
) -> dict[str, np.ndarray]:
  """The training pair of one decoded record (docs/method.md §LR/HR generation).

  Args:
    record: 'image' (H, W, 3) uint8, 'mask' (H, W[, 1]) class ids and 'fov'
      (H, W[, 1]) 0/1, as the project's builders store them.
    hr_size: (height, width) of the HR target, divisible by `upscale`.
    upscale: r; the LR input is hr_size / r.
    rng: augments (official recipe) at the original resolution when given.
    num_classes: when given, mask ids outside [0, num_classes) are refused.
    variant: model.variant; seg_only and seg_hr get the example of their own
      input size (`imaging.io_sizes`), all others the LR/HR pair.

  Returns:
    'lr' (h, w, 3) and 'hr' (H, W, 3) float32 in [-1, 1]; 'mask' (H, W) int32;
    'fov' (H, W) uint8. For seg_only / seg_hr, (H, W) = (h, w) is the input
    size and 'hr' is 'lr' (the image at the mask's size).

  Raises:
    ValueError: naming the record's file, for a non-RGB image, a mask or FOV
      of another size, or out-of-range class ids.
  """
  (in_h, in_w), (height, width) = imaging.io_sizes(hr_size, upscale, variant)
  image = np.asarray(record['image'])
  mask = _plane(record['mask'])
  fov = _plane(record['fov'])
  check_record(record, image, mask, fov, num_classes)
  if rng is not None:
    image, (mask, fov) = augment.augment(image, (mask, fov), rng)
  if image.shape[:2] == (height, width):
    hr = image
  else:
    hr = augment.resize_bicubic(image, (height, width))
    mask = imaging.resize_mask(mask, (height, width))
    fov = imaging.resize_mask(fov, (height, width))
  if variant in imaging.SEG_INPUT:  # Input and output share one size: one image.
    hr = imaging.normalise(hr)
    return {
        'lr': hr,
        'hr': hr,
        'mask': mask.astype(np.int32),
        'fov': fov.astype(np.uint8),
    }
  # LR comes from the augmented original, not from HR (docs/method.md D10).
  return {
      'lr': imaging.bicubic_normalised(image, (in_h, in_w)),
      'hr': imaging.normalise(hr),
      'mask': mask.astype(np.int32),
      'fov': fov.astype(np.uint8),
  }


def random_crop(
    example: Mapping[str, np.ndarray],
    crop_size: Sequence[int],
    upscale: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
  """An aligned HR/LR crop: HR offsets are multiples of r, LR = HR / r."""
  ch, cw = (int(v) for v in crop_size)
  height, width = example['hr'].shape[:2]
  y = int(rng.integers(0, (height - ch) // upscale + 1)) * upscale
  x = int(rng.integers(0, (width - cw) // upscale + 1)) * upscale
  out = {
      key: example[key][y : y + ch, x : x + cw]
      for key in ('hr', 'mask', 'fov')
  }
  ly, lx = y // upscale, x // upscale
  out['lr'] = example['lr'][ly : ly + ch // upscale, lx : lx + cw // upscale]
  return out


def _plane(x: Any) -> np.ndarray:
  x = np.asarray(x)
  return x[..., 0] if x.ndim == 3 else x


def _record_name(record: Mapping[str, Any]) -> str:
  name = record.get('file_name', b'') if hasattr(record, 'get') else b''
  if isinstance(name, bytes):
    name = name.decode('utf-8', 'replace')
  return f'example {name!r}' if name else 'an example'


def check_record(
    record: Mapping[str, Any],
    image: np.ndarray,
    mask: np.ndarray,
    fov: np.ndarray,
    num_classes: int | None = None,
) -> None:
  """One-line errors for a record the model would silently mis-train on."""
  name = _record_name(record)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(
        f'{name}: image has shape {image.shape}; expected (H, W, 3) RGB (the'
        ' builders convert RGBA and grayscale to RGB when they decode).'
    )
  for key, plane in (('mask', mask), ('fov', fov)):
    if plane.shape != image.shape[:2]:
      raise ValueError(
          f'{name}: image is {image.shape[1]}x{image.shape[0]} (WxH) but its'
          f' {key} is {plane.shape[-1]}x{plane.shape[0]}.'
      )
  if num_classes is not None and mask.size:
    low, high = int(mask.min()), int(mask.max())
    if low < 0 or high >= num_classes:
      bad = np.unique(mask[(mask < 0) | (mask >= num_classes)])[:5].tolist()
      raise ValueError(
          f'{name}: mask holds class ids {bad} outside [0, {num_classes})'
          f' for model.num_classes={num_classes}.'
      )


def check_num_classes(
    builder: tfds.core.DatasetBuilder, num_classes: int
) -> None:
  """model.num_classes must match the dataset's CLASS_NAMES, when it has them."""
  names = getattr(builder, 'CLASS_NAMES', None)
  if names and len(names) != int(num_classes):
    raise ValueError(
        f'model.num_classes={num_classes} but dataset {builder.name!r} has'
        f' {len(names)} classes ({", ".join(names)}).'
    )


def data_source(data_cfg: ml_collections.ConfigDict, split: str, key: str):
  """The split's random-access source (TFDS slicing such as 'train[:90%]'
  works); unknown or empty splits are one-line errors naming `key`."""
  builder = prepare(data_cfg)
  try:
    count = builder.info.splits[split].num_examples
  except (KeyError, ValueError):
    raise ValueError(
        f'{key}={split!r} is not a split of {builder.info.full_name};'
        f' available: {", ".join(builder.info.splits)}.'
    ) from None
  if count == 0:
    raise ValueError(
        f'{key}={split!r} of {builder.info.full_name} is empty (in'
        f' {builder.data_dir}).'
    )
  return builder.as_data_source(split)


def _check_crop(
    crop_size: Sequence[int], hr_size: tuple[int, int], upscale: int
) -> tuple[int, int] | None:
  if not crop_size:
    return None
  if len(crop_size) != 2 or any(int(v) <= 0 for v in crop_size):
    raise ValueError(
        f'data.crop_size must be () or (height, width), got {crop_size}.'
    )
  ch, cw = (int(v) for v in crop_size)
  if ch % upscale or cw % upscale:
    raise ValueError(
        f'data.crop_size {tuple(crop_size)} is not divisible by model.upscale'
        f' {upscale}.'
    )
  if ch > hr_size[0] or cw > hr_size[1]:
    raise ValueError(
        f'data.crop_size {tuple(crop_size)} is larger than data.hr_size'
        f' {hr_size}.'
    )
  return ch, cw


def _seed(config: ml_collections.ConfigDict, stream: int) -> int:
  seed = int(config.seed)
  if seed < 0:
    raise ValueError(f'seed must be a non-negative int, got {seed}.')
  return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def _local_batch_size(batch_size: int, process_count: int, key: str) -> int:
  if batch_size <= 0 or batch_size % process_count:
    raise ValueError(
        f'{key} {batch_size} must be a positive multiple of the process count'
        f' {process_count}.'
    )
  return batch_size // process_count


# ----------------------------------------------------------------------------
# Training.


def train_dataset(
    config: ml_collections.ConfigDict,
    *,
    process_index: int = 0,
    process_count: int = 1,
    stop: threading.Event | None = None,
) -> grain.MapDataset:
  """Item `ds[step]` is this process's part of the global batch of `step`.

  Once `stop` is set, loading an element raises `Stopped`: a reader thread
  half-way through a large batch gives up within one example.

  The split is reshuffled every epoch and repeats forever; the stream of
  examples runs across epoch boundaries (every batch is full). Element `g` of
  the global stream is augmented with a generator seeded by (seed, g), so any
  batch can be recomputed from its index alone: resuming at step k is reading
  from index k. Global batch k holds elements k·B .. k·B + B − 1, and process
  p reads the contiguous block p·b .. p·b + b − 1 of it (b = B / processes).
  """
  local = _local_batch_size(config.batch_size, process_count, 'batch_size')
  if not 0 <= process_index < process_count:
    raise ValueError(
        f'process_index {process_index} is outside [0, {process_count}).'
    )
  upscale = int(config.model.upscale)
  hr_size = imaging.check_sizes(config.data.hr_size, upscale)
  crop = _check_crop(config.data.crop_size, hr_size, upscale)
  variant = config.model.variant
  crop_upscale = upscale
  if variant in imaging.SEG_INPUT:  # One size in and out: crop it (HR crop x out / HR).
    crop_upscale = 1
    out = imaging.io_sizes(hr_size, upscale, variant)[1]
    if crop is not None:
      crop = (crop[0] * out[0] // hr_size[0], crop[1] * out[1] // hr_size[1])
  do_augment = bool(config.data.augment)
  source = split_source(config, config.data.train_split, 'data.train_split')
  if cache_bytes(config.data):
    source = DecodedCache(source, cache_bytes(config.data))
  augment_seed = _seed(config, _AUGMENT_STREAM)
  num_classes = int(config.model.num_classes)

  def load(index: int, record: Mapping[str, Any]) -> dict[str, np.ndarray]:
    if stop is not None and stop.is_set():
      raise Stopped('the train iterator was closed')
    rng = np.random.default_rng([augment_seed, index])
    example = make_example(
        record, hr_size, upscale, rng if do_augment else None, variant,
        num_classes=num_classes,
    )
    if crop is not None:
      example = random_crop(example, crop, crop_upscale, rng)
    return example

  ds = grain.MapDataset.source(source)
  ds = ds.shuffle(seed=_seed(config, _SHUFFLE_STREAM)).repeat()
  ds = ds.map_with_index(load)
  # Blocks of b consecutive elements; every process_count-th block is ours.
  # (drop_remainder: the stream is endless, and it keeps len() an exact int.)
  ds = ds.batch(local, drop_remainder=True)
  return ds.slice(slice(process_index, None, process_count))


def num_workers(config: ml_collections.ConfigDict) -> int:
  """`data.num_workers` reader threads; 0 means one per host CPU core.

  Threads, not processes: the per-example work (PNG decode, OpenCV
  augmentation and resizing) runs outside the GIL, so threads scale with the
  cores without copying every batch between processes.
  """
  n = int(config.data.num_workers)
  if n < 0:
    raise ValueError(f'data.num_workers must be >= 0 (0 = one per CPU core), got {n}.')
  return n or os.cpu_count() or 1


def read_options(config: ml_collections.ConfigDict) -> grain.ReadOptions:
  """grain's reader threads and prefetch, from `data.num_workers` / `prefetch`."""
  return grain.ReadOptions(
      num_threads=num_workers(config),
      prefetch_buffer_size=int(config.data.prefetch),
  )


def train_iterator(
    config: ml_collections.ConfigDict,
    start_step: int,
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
  """Batches of steps start_step, start_step + 1, ... prepared by threads.

  Call `close()` when done: it cancels the batches read ahead and stops the
  threads mid-batch. Without it, Python waits at exit for every queued batch
  (minutes for a large batch_size after a failed step: the run never ends).
  """
  stop = threading.Event()
  ds = train_dataset(
      config, process_index=process_index, process_count=process_count, stop=stop
  )
  ds = ds.slice(slice(int(start_step), None))
  return TrainIterator(iter(ds.to_iter_dataset(read_options(config))), stop)


class Stopped(RuntimeError):
  """Raised in a reader thread whose iterator was closed."""


class TrainIterator(Iterator[dict[str, np.ndarray]]):
  """grain's prefetching iterator, with a `close()` that does not wait for its threads."""

  def __init__(self, it, stop: threading.Event):
    self._it, self._stop = it, stop

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self._it)

  def close(self) -> None:
    self._stop.set()  # Running batches abort at their next example ...
    close = getattr(self._it, 'close', None)
    if close is not None:
      close()  # ... queued ones are cancelled.


# ----------------------------------------------------------------------------
# Evaluation.


def eval_batches(
    config: ml_collections.ConfigDict,
    split: str,
    batch_size: int,
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
  """Every example of `split` once, in order, at HR, without augmentation.

  (At the network's output size for seg_only / seg_hr: see `imaging.io_sizes`.)

  All batches have the same shape so that a jitted eval step compiles once:
  the last one is padded with zero examples, and 'valid' (B,) float32 marks
  real examples with 1. 'index' (B,) int32 is the example's position in the
  split (−1 for padding). `batch_size` is global; each process gets its
  contiguous block of every batch.
  """
  local = _local_batch_size(batch_size, process_count, 'eval batch_size')
  upscale = int(config.model.upscale)
  hr_size = imaging.check_sizes(config.data.hr_size, upscale)
  variant = config.model.variant
  source = split_source(config, split, 'eval split')
  num_classes = int(config.model.num_classes)
  count = len(source)
  padded = -(-count // batch_size) * batch_size
  (in_h, in_w), (height, width) = imaging.io_sizes(hr_size, upscale, variant)
  blank = {
      'lr': np.zeros((in_h, in_w, 3), np.float32),
      'hr': np.zeros((height, width, 3), np.float32),
      'mask': np.zeros((height, width), np.int32),
      'fov': np.zeros((height, width), np.uint8),
  }

  def load(index: int) -> dict[str, np.ndarray]:
    if index < count:
      example = make_example(
          source[index], hr_size, upscale, variant=variant, num_classes=num_classes
      )
      valid = 1.0
    else:
      example, valid, index = blank, 0.0, -1
    return dict(
        example, valid=np.float32(valid), index=np.int32(index)
    )

  ds = grain.MapDataset.range(padded).map(load).batch(local)
  ds = ds.slice(slice(process_index, None, process_count))
  return iter(ds.to_iter_dataset(read_options(config)))
