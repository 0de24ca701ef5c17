"""Writes a tiny DRIVE with the original DRIVE.zip layout.

DRIVE/{training,test}/images/NN_{training,test}.tif (RGB TIFF),
.../1st_manual/NN_manual1.gif, .../mask/NN_{training,test}_mask.gif, and
test/2nd_manual/NN_manual2.gif, NN = 21..40 (training) and 01..20 (test); 29x28
(HxW) pixels instead of 584x565. Label GIFs use palette indices 0/1 and the
FOV GIFs grey 0/255, the two encodings GIF masks come in.

  python -m ds2f_jax.datasets.drive.dummy_data.make_dummy_data OUT_DIR [--extracted]
  python -m ds2f_jax.datasets.drive.dummy_data.make_dummy_data OUT_DIR --grand-challenge
"""

import sys

from ds2f_jax.datasets import dummy_images

HEIGHT, WIDTH = 29, 28


def files(prefix: str = 'DRIVE/') -> dict[str, bytes]:
  out = {}
  for part, ids in (('training', range(21, 41)), ('test', range(1, 21))):
    for n in ids:
      photo, vessels, fov = dummy_images.fundus(HEIGHT, WIDTH, seed=n)
      base = f'{prefix}{part}'
      out[f'{base}/images/{n:02d}_{part}.tif'] = dummy_images.encode(
          photo, 'TIFF')
      out[f'{base}/1st_manual/{n:02d}_manual1.gif'] = dummy_images.encode(
          vessels, 'GIF', 'P01')
      if part == 'test':
        out[f'{base}/2nd_manual/{n:02d}_manual2.gif'] = dummy_images.encode(
            vessels, 'GIF', 'P01')
      out[f'{base}/mask/{n:02d}_{part}_mask.gif'] = dummy_images.encode(
          dummy_images.binary(fov), 'GIF', 'L')
  return out


def make(root: str, extracted: bool = False,
         grand_challenge: bool = False) -> None:
  """DRIVE.zip; or the grand-challenge training.zip + test.zip (no labels)."""
  if grand_challenge:
    all_files = files(prefix='')
    dummy_images.write_zip(f'{root}/training.zip', dummy_images.subset(
        all_files, ['training/']))
    dummy_images.write_zip(f'{root}/test.zip', dummy_images.subset(
        all_files, ['test/images/', 'test/mask/']))
  elif extracted:
    dummy_images.write_tree(root, files())
  else:
    dummy_images.write_zip(f'{root}/DRIVE.zip', files())


if __name__ == '__main__':
  make(sys.argv[1], extracted='--extracted' in sys.argv[2:],
       grand_challenge='--grand-challenge' in sys.argv[2:])
