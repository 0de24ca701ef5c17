"""DRIVE vessels at native resolution, r = 2.

HR (584, 564), (height, width): DRIVE's photos are 565x584 (WxH; Staal et
al., IEEE TMI 2004). HR must be divisible by r, and the official DS2F pipeline
trains on (image_size // r) * r anyway (docs/ds2f_method.md §4.7), i.e. 584x564
for DRIVE's native size; r = 2 as in the official configs (§4.4). The paper's
batch size is not recoverable (§4.4): 4 fits the GPU. Steps: the official
300 epochs over the 20 training photos at batch 4.

  python main.py --mode prepare --config configs/drive.py \
      --config.data.manual_dir=DIR --config.data.data_dir=DIR2
  python main.py --config configs/drive.py --workdir /ckpt \
      --config.data.manual_dir=DIR
"""

from configs import default


def get_config():
  c = default.get_config()
  c.data.name = 'drive'
  c.data.config = ''
  c.data.hr_size = (584, 564)
  c.model.upscale = 2
  c.batch_size = 4
  c.num_train_steps = 300 * 20 // 4
  return c
