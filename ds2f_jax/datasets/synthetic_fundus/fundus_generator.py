"""Procedural fundus-like images with exact vessel and field-of-view masks.

The images only need to look enough like retinal photographs that the whole
DS2F pipeline (HR/LR pairs, augmentation, segmentation of thin dark curvilinear
structures) can be exercised without downloading anything. Every example is a
pure function of its seed, so the dataset is reproducible bit for bit.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFilter

# Share of field-of-view pixels that are vessel; each image draws its own
# target in this range, close to the 8-12 % of the real vessel datasets.
VESSEL_FRACTION_RANGE = (0.085, 0.11)
MAX_WIDTH = 5.0  # Widest trunk, in pixels.
MIN_WIDTH = 1.0  # Branches thinner than this stop growing.

_SPLIT_CODES = {'train': 0, 'validation': 1, 'test': 2}
_SEED_SALT = 0x5F0DD5  # Keeps these streams apart from other (split, i) uses.


@dataclasses.dataclass
class Example:
  image: np.ndarray  # (H, W, 3) uint8 RGB.
  mask: np.ndarray  # (H, W) uint8 class ids: 0 background, 1 vessel.
  fov: np.ndarray  # (H, W) uint8 0/1 field of view.


def example_seed(split: str, index: int) -> np.random.SeedSequence:
  """The seed of one example: a function of its split and index only."""
  if split not in _SPLIT_CODES:
    raise ValueError(
        f'synthetic_fundus: unknown split {split!r}; expected one of'
        f' {sorted(_SPLIT_CODES)}.'
    )
  return np.random.SeedSequence([_SEED_SALT, _SPLIT_CODES[split], index])


def generate(
    height: int, width: int, seed: np.random.SeedSequence | int
) -> Example:
  """Draws one fundus-like image and its masks."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
  size = min(height, width)
  cy = (height - 1) / 2 + rng.uniform(-0.02, 0.02) * size
  cx = (width - 1) / 2 + rng.uniform(-0.02, 0.02) * size
  radius = rng.uniform(0.44, 0.48) * size
  dist = np.hypot(yy - cy, xx - cx) / radius
  fov = dist <= 1.0

  # Optic disc on the left or right, slightly above or below the centre.
  side = rng.choice([-1.0, 1.0])
  od_y = cy + rng.uniform(-0.08, 0.08) * radius
  od_x = cx + side * rng.uniform(0.45, 0.6) * radius
  od_r = rng.uniform(0.08, 0.11) * radius

  shade = _background(rng, yy, xx, dist, cy, cx, radius, od_y, od_x, od_r, side)
  # Widths shrink with the image so that small test images keep a realistic
  # vessel density; 256 pixels and up get the full 1-5 px range.
  max_width = max(2.5, MAX_WIDTH * min(1.0, size / 256))
  vessels, darkness = _vessel_maps(
      rng, height, width, fov, (od_y, od_x), od_r, radius, max_width
  )
  image = shade * (1.0 - darkness[..., None])
  noise = rng.normal(0.0, rng.uniform(1.5, 4.0), image.shape)
  image += noise.astype(np.float32)
  image *= _soft_edge(dist, radius)[..., None]
  image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
  return Example(
      image=image,
      mask=(vessels & fov).astype(np.uint8),
      fov=fov.astype(np.uint8),
  )


def _background(rng, yy, xx, dist, cy, cx, radius, od_y, od_x, od_r, side):
  """Reddish retina with vignetting, uneven light, optic disc and macula."""
  height, width = yy.shape
  base = np.array(
      [rng.uniform(170, 215), rng.uniform(65, 105), rng.uniform(25, 55)],
      np.float32,
  )
  vignette = 1.0 - rng.uniform(0.35, 0.55) * np.clip(dist, 0, 1) ** 2.5
  # Low-frequency illumination: a coarse random grid, smoothly upsampled.
  coarse = rng.uniform(0.88, 1.12, (5, 5)).astype(np.float32)
  light = np.asarray(
      Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
  )
  shade = base * (vignette * light)[..., None]
  # The macula is a darker patch on the far side of the centre.
  mac_y = cy + rng.uniform(-0.05, 0.05) * radius
  mac_x = cx - side * rng.uniform(0.2, 0.3) * radius
  mac_d2 = (yy - mac_y) ** 2 + (xx - mac_x) ** 2
  mac = np.exp(-mac_d2 / (2 * (0.12 * radius) ** 2))
  shade *= (1.0 - rng.uniform(0.15, 0.3) * mac)[..., None]
  # The optic disc is a bright yellowish spot that blends into the retina.
  disc = np.exp(-(((yy - od_y) ** 2 + (xx - od_x) ** 2) / od_r**2) ** 2)
  disc_colour = np.array([255, rng.uniform(215, 245), rng.uniform(150, 200)])
  weight = rng.uniform(0.75, 0.95) * disc[..., None]
  return (shade * (1 - weight) + disc_colour * weight).astype(np.float32)


def _soft_edge(dist, radius):
  """One-pixel anti-aliased rim of the circular field of view."""
  return np.clip((1.0 - dist) * radius + 0.5, 0.0, 1.0).astype(np.float32)


@dataclasses.dataclass
class _Branch:
  points: list[tuple[float, float]]  # (x, y) polyline, as PIL wants it.
  width: float
  contrast: float


def _vessel_maps(rng, height, width, fov, disc, disc_r, radius, max_width):
  """Grows vessel trees from the optic disc until the target density."""
  target = rng.uniform(*VESSEL_FRACTION_RANGE)
  fov_pixels = max(int(fov.sum()), 1)
  mask_img = Image.new('L', (width, height), 0)
  dark_img = Image.new('L', (width, height), 0)
  mask_draw = ImageDraw.Draw(mask_img)
  dark_draw = ImageDraw.Draw(dark_img)
  grower = _Grower(rng, fov, radius, max_width)
  fov_u8 = fov.astype(np.uint8)

  def fraction():
    return float((np.asarray(mask_img) & fov_u8).sum()) / fov_pixels

  # Four arcades (up/down on either side) plus a few extra trunks.
  base_angles = [np.pi / 2 - 0.6, np.pi / 2 + 0.6, -np.pi / 2 - 0.6,
                 -np.pi / 2 + 0.6, 0.0, np.pi]
  rounds = 0
  drawn = 0
  while rounds < 24:
    # First the main trunks; then thinner extra trees until dense enough.
    if rounds == 0:
      angles = [a + rng.normal(0, 0.25) for a in base_angles]
      widths = (0.7, 1.0)
    else:
      angles = list(rng.uniform(-np.pi, np.pi, 3))
      widths = (0.4, 0.7)
    roots = []
    for angle in angles:
      start = (disc[1] + np.cos(angle) * disc_r * 0.3,
               disc[0] + np.sin(angle) * disc_r * 0.3)
      roots.append((start, angle, rng.uniform(*widths) * max_width))
    branches = grower.trees(roots)
    for branch in branches:
      line_w = int(np.clip(round(branch.width), MIN_WIDTH, max_width))
      mask_draw.line(branch.points, fill=1, width=line_w, joint='curve')
      dark_draw.line(
          branch.points, fill=int(255 * branch.contrast), width=line_w,
          joint='curve',
      )
      drawn += 1
      if drawn % 4 == 0 and fraction() >= target:
        break
    if fraction() >= target:
      break
    rounds += 1
  vessels = np.asarray(mask_img) > 0
  # A slight blur gives vessels a smooth profile instead of hard steps; the
  # mask stays the exact drawn footprint.
  dark = np.asarray(dark_img.filter(ImageFilter.GaussianBlur(0.6)), np.float32)
  return vessels, dark / 255.0


class _Grower:
  """Random walks that split in two, thinning as they go (Murray-like)."""

  def __init__(self, rng, fov, radius, max_width):
    self.rng = rng
    self.max_width = max_width
    self.fov = fov
    self.radius = radius
    self.step = max(2.0, radius / 40)

  def trees(self, roots):
    """All branches of the trees at `roots`, breadth first across trees."""
    frontier = [(p, a, w, 0) for p, a, w in roots]
    out = []
    while frontier:
      nxt = []
      for start, angle, w, depth in frontier:
        branch, end, end_angle = self._walk(start, angle, w)
        if branch is None:
          continue
        out.append(branch)
        child_w = w * self.rng.uniform(0.68, 0.85)
        if child_w < MIN_WIDTH or depth >= 7:
          continue
        spread = self.rng.uniform(0.35, 0.8)
        skew = self.rng.uniform(-0.2, 0.2)
        nxt.append((end, end_angle + spread + skew, child_w, depth + 1))
        nxt.append((end, end_angle - spread + skew,
                    child_w * self.rng.uniform(0.8, 1.0), depth + 1))
      frontier = nxt
    return out

  def _walk(self, start, angle, w):
    rng = self.rng
    height, width = self.fov.shape
    length = self.radius * rng.uniform(0.18, 0.3) * (0.6 + w / self.max_width)
    steps = max(2, int(length / self.step))
    x, y = start
    points = [(x, y)]
    turn = rng.normal(0, 0.04)
    for _ in range(steps):
      turn = 0.8 * turn + rng.normal(0, 0.05)
      angle += turn
      x += np.cos(angle) * self.step
      y += np.sin(angle) * self.step
      xi, yi = int(round(x)), int(round(y))
      if not (0 <= yi < height and 0 <= xi < width and self.fov[yi, xi]):
        break
      points.append((x, y))
    if len(points) < 2:
      return None, None, None
    contrast = rng.uniform(0.22, 0.4) * (0.55 + 0.45 * w / self.max_width)
    branch = _Branch(points=points, width=w, contrast=contrast)
    return branch, points[-1], angle
