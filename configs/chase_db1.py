"""CHASE_DB1 vessels at native resolution, r = 2; first 20 train, last 8 test.

HR (960, 998), (height, width): CHASE_DB1's photos are 999x960 (WxH; Fraz et
al., IEEE TBME 2012), trained as the official DS2F pipeline does, at
(image_size // r) * r (docs/ds2f_method.md §4.7); r = 2 as in the official
configs (§4.4). The split is the builder config `train20_test8` (the other
common split: --config.data.config=train8_test20). The paper's batch size is
not recoverable (§4.4): 2 fits ~1 megapixel HR targets. Steps: the official
300 epochs over 20 training photos at batch 2.

  python main.py --mode prepare --config configs/chase_db1.py \
      --config.data.manual_dir=DIR --config.data.data_dir=DIR2
  python main.py --config configs/chase_db1.py --workdir /ckpt \
      --config.data.manual_dir=DIR
"""

from configs import default


def get_config():
  c = default.get_config()
  c.data.name = 'chase_db1'
  c.data.config = 'train20_test8'
  c.data.hr_size = (960, 998)
  c.model.upscale = 2
  c.batch_size = 2
  c.num_train_steps = 300 * 20 // 2
  return c
