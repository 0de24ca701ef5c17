"""CHASE_DB1 vessels at native resolution, r = 2; first 20 train, last 8 test.

HR (960, 998), (height, width): CHASE_DB1's photos are 999x960 (WxH; Fraz et
al., IEEE TBME 2012), trained as the official DS2F pipeline does, at
(image_size // r) * r (docs/method.md §LR/HR generation); r = 2 as in the official
configs (§Training recipe). The split is the builder config `train20_test8` (the other
common split: --config.data.config=train8_test20). The paper's batch size is
not recoverable (§Training recipe): 2 fits ~1 megapixel HR targets. Steps: the official
300 epochs over 20 training photos at batch 2.

  python main.py --mode prepare --config configs/chase_db1.py \
      --config.data.manual_dir=DIR --config.data.data_dir=DIR2
  python main.py --config configs/chase_db1.py --workdir /ckpt \
      --config.data.manual_dir=DIR

Expected time on one GPU: training at this LR size costs 2131.5 GFLOP per
image (583.2 GFLOP at LR 256x256, scaled by LR pixels), 6000 images in all:
12.8 PFLOP. Our plain jax.jit step on one H200 sustains 121.4 images/s
float32 / 189.8 bfloat16 at LR 256x256, batch 8 (~71 / ~111 TFLOP/s; the
official PyTorch code's best is 170.3 images/s), so ~181 s float32 /
~116 s bfloat16 of steps, plus ~40-80 s of compile and the evaluations; the
input pipeline needs data.num_workers near the host's core count to keep up
(benchmarks/accuracy_gpu.sh sets it).

`--config configs/chase_db1.py:cpu` is the reduced recipe for 2 CPU cores (width
16, 256x256 HR crops, 1500 steps, <= 40 min): see configs/cpu_recipe.py for
what it reduces and why. Its launch commands:

  python main.py --config configs/chase_db1.py:cpu --workdir W \
      --config.data.manual_dir=DIR
  python -m ds2f_jax.ablate --config configs/chase_db1.py:cpu --workdir W \
      --variants ds2f,seg_only --seeds 2 --config.data.manual_dir=DIR
"""

from configs import cpu_recipe, default


def get_config(arg: str = ''):
  c = default.get_config()
  c.data.name = 'chase_db1'
  c.data.config = 'train20_test8'
  c.data.hr_size = (960, 998)
  c.model.upscale = 2
  c.batch_size = 2
  c.num_train_steps = 300 * 20 // 2
  return cpu_recipe.apply(c, 'chase_db1', arg)
