"""STARE vessels at native resolution, r = 2; 10 train, 10 test.

HR (604, 700), (height, width): STARE's photos are 700x605 (WxH; Hoover et
al., IEEE TMI 2000), trained as the official DS2F pipeline does, at
(image_size // r) * r (docs/ds2f_method.md §4.7); r = 2 as in the official
configs (§4.4). The paper's batch size is not recoverable (§4.4): 4. Steps:
the official 300 epochs over the 10 training photos at batch 4.

  python main.py --mode prepare --config configs/stare.py \
      --config.data.manual_dir=DIR --config.data.data_dir=DIR2
  python main.py --config configs/stare.py --workdir /ckpt \
      --config.data.manual_dir=DIR
"""

from configs import default


def get_config():
  c = default.get_config()
  c.data.name = 'stare'
  c.data.config = ''
  c.data.hr_size = (604, 700)
  c.model.upscale = 2
  c.batch_size = 4
  c.num_train_steps = 300 * 10 // 4
  return c
