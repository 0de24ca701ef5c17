"""STARE vessels at native resolution, r = 2; 10 train, 10 test.

HR (604, 700), (height, width): STARE's photos are 700x605 (WxH; Hoover et
al., IEEE TMI 2000), trained as the official DS2F pipeline does, at
(image_size // r) * r (docs/method.md §LR/HR generation); r = 2 as in the official
configs (§Training recipe). The paper's batch size is not recoverable: 4. Steps:
the official 300 epochs over the 10 training photos at batch 4.

  python main.py --mode prepare --config configs/stare.py \
      --config.data.manual_dir=DIR --config.data.data_dir=DIR2
  python main.py --config configs/stare.py --workdir /ckpt \
      --config.data.manual_dir=DIR

Expected time on one GPU: training at this LR size costs 940.6 GFLOP per
image (583.2 GFLOP at LR 256x256, scaled by LR pixels), 3000 images in all:
2.8 PFLOP. Our plain jax.jit step on one H200 sustains 121.4 images/s
float32 / 189.8 bfloat16 at LR 256x256, batch 8 (~71 / ~111 TFLOP/s; the
official PyTorch code's best is 170.3 images/s), so ~40 s float32 /
~25 s bfloat16 of steps, plus ~40-80 s of compile and the evaluations; the
input pipeline needs data.num_workers near the host's core count to keep up
(benchmarks/accuracy_gpu.sh sets it).

`--config configs/stare.py:cpu` is the reduced recipe for 2 CPU cores (width
16, 256x256 HR crops, 1500 steps, <= 40 min): see configs/cpu_recipe.py for
what it reduces and why. Its launch commands:

  python main.py --config configs/stare.py:cpu --workdir W \
      --config.data.manual_dir=DIR
  python -m ds2f_jax.ablate --config configs/stare.py:cpu --workdir W \
      --variants ds2f,seg_only --seeds 2 --config.data.manual_dir=DIR
"""

from configs import cpu_recipe, default


def get_config(arg: str = ''):
  c = default.get_config()
  c.data.name = 'stare'
  c.data.config = ''
  c.data.hr_size = (604, 700)
  c.model.upscale = 2
  c.batch_size = 4
  c.num_train_steps = 300 * 10 // 4
  return cpu_recipe.apply(c, 'stare', arg)
