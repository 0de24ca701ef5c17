"""REFUGE optic disc and cup (3 classes), HR 512x512, r = 2.

No DS2F setting for REFUGE is recoverable (docs/method.md §Training recipe; the
official code reads it through its generic path). HR (512, 512) is our
choice: about a quarter of the training photos (2124x2056, WxH) and a third of
the validation/test photos (1634x1634) of the REFUGE release (Orlando et al.,
MedIA 2020), which keeps the cup (a few % of the photo) tens of pixels wide;
r = 2 as in the official configs (§Training recipe). Batch 8 (the default); steps: the
official 300 epochs over the 400 training photos.

  python main.py --mode prepare --config configs/refuge.py \
      --config.data.manual_dir=DIR --config.data.data_dir=DIR2
  python main.py --config configs/refuge.py --workdir /ckpt \
      --config.data.manual_dir=DIR
"""

from configs import default


def get_config():
  c = default.get_config()
  c.data.name = 'refuge'
  c.data.config = ''
  c.data.hr_size = (512, 512)
  c.model.upscale = 2
  c.model.num_classes = 3  # background, disc (rim), cup.
  c.batch_size = 8
  c.num_train_steps = 300 * 400 // 8
  return c
