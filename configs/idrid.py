"""IDRiD lesions (default: hard exudates, binary), HR 712x1072, r = 2.

No DS2F setting for IDRiD is recoverable (docs/method.md §Training recipe).
HR (712, 1072), (height, width), is a quarter of IDRiD's 4288x2848 (WxH)
photos (Porwal et al., Data 2018), the same reduction the official HRF config
applies to HRF's photos; r = 2 as in the official configs (§Training recipe). Other lesion
types: --config.data.config=microaneurysms|haemorrhages|soft_exudates|
optic_disc (or MA, HE, SE, OD). Batch 2; steps: the official 300 epochs over
the 54 training photos.

  python main.py --mode prepare --config configs/idrid.py \
      --config.data.manual_dir=DIR --config.data.data_dir=DIR2
  python main.py --config configs/idrid.py --workdir /ckpt \
      --config.data.manual_dir=DIR
"""

from configs import default


def get_config():
  c = default.get_config()
  c.data.name = 'idrid'
  c.data.config = 'hard_exudates'
  c.data.hr_size = (712, 1072)
  c.model.upscale = 2
  c.batch_size = 2
  c.num_train_steps = 300 * 54 // 2
  return c
