"""HRF vessels at a quarter of native resolution, r = 2 (the official config).

HR (584, 876), (height, width): the official DS2F HRF config
(configs/vessel_segmentation.json) has image_size [876, 584] and r = 2, meant
as a quarter of HRF's 3504x2336 (WxH) photos; read in true (height, width)
order as decided in docs/ds2f_method.md §9 item 9 (§8 item 11). That config
trains 300 epochs at batch 1; BatchNorm wants at least 2 (§8 item 19), so
batch 2 here, 300 epochs over the 15 training photos.

  python main.py --mode prepare --config configs/hrf.py \
      --config.data.manual_dir=DIR --config.data.data_dir=DIR2
  python main.py --config configs/hrf.py --workdir /ckpt \
      --config.data.manual_dir=DIR
"""

from configs import default


def get_config():
  c = default.get_config()
  c.data.name = 'hrf'
  c.data.config = ''
  c.data.hr_size = (584, 876)
  c.model.upscale = 2
  c.batch_size = 2
  c.num_train_steps = 300 * 15 // 2
  return c
