"""The embedded default: DS2F-UNet on procedurally generated fundus images (no download).

  python main.py --config configs/synthetic.py --workdir /tmp/ds2f_synthetic

`--config configs/synthetic.py:tiny` shrinks everything to a seconds-long smoke run
(what the tests use).
"""

from configs import default


def get_config(arg: str = ''):
  c = default.get_config()
  c.data.name = 'synthetic_fundus'
  # The images' own size: a smaller HR would nearest-resize 1-px vessels into
  # dotted, unlearnable masks (measured: Dice between the two sampling phases of
  # one downscaled mask is 0.62). Training sees 128x128 crops.
  c.data.hr_size = (256, 256)
  c.data.crop_size = (128, 128)
  c.model.upscale = 2
  c.model.width = 16
  c.batch_size = 8
  c.num_train_steps = 500
  c.log_every_steps = 20
  c.eval_every_steps = 100
  c.checkpoint_every_steps = 250
  c.optim.learning_rate = 0.05
  if arg == 'tiny':
    c.data.hr_size = (64, 64)
    c.data.crop_size = ()
    c.model.width = 4
    c.batch_size = 2
    c.num_train_steps = 2
    c.log_every_steps = 1
    c.eval_every_steps = 2
    c.checkpoint_every_steps = 1
    c.eval.batch_size = 8
    c.data.num_workers = 1
  elif arg:
    raise ValueError(f'configs/synthetic.py: unknown argument {arg!r} (use "tiny" or nothing)')
  return c
