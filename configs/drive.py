"""DRIVE vessels at native resolution, r = 2.

HR (584, 564), (height, width): DRIVE's photos are 565x584 (WxH; Staal et
al., IEEE TMI 2004). HR must be divisible by r, and the official DS2F pipeline
trains on (image_size // r) * r anyway (docs/method.md §LR/HR generation), i.e. 584x564
for DRIVE's native size; r = 2 as in the official configs (§Training recipe). The paper's
batch size is not recoverable (§Training recipe): 4 fits the GPU. Steps: the official
300 epochs over the 20 training photos at batch 4.

  python main.py --mode prepare --config configs/drive.py \
      --config.data.manual_dir=DIR --config.data.data_dir=DIR2
  python main.py --config configs/drive.py --workdir /ckpt \
      --config.data.manual_dir=DIR

Expected time on one GPU: training at this LR size costs 732.8 GFLOP per
image (583.2 GFLOP at LR 256x256, scaled by LR pixels), 6000 images in all:
4.4 PFLOP. Our plain jax.jit step on one H200 sustains 121.4 images/s
float32 / 189.8 bfloat16 at LR 256x256, batch 8 (~71 / ~111 TFLOP/s; the
official PyTorch code's best is 170.3 images/s), so ~62 s float32 /
~40 s bfloat16 of steps, plus ~40-80 s of compile and the evaluations; the
input pipeline needs data.num_workers near the host's core count to keep up
(benchmarks/accuracy_gpu.sh sets it).

`--config configs/drive.py:cpu` is the reduced recipe for 2 CPU cores (width
16, 256x256 HR crops, 1500 steps, <= 40 min): see configs/cpu_recipe.py for
what it reduces and why. Its launch commands:

  python main.py --config configs/drive.py:cpu --workdir W \
      --config.data.manual_dir=DIR
  python -m ds2f_jax.ablate --config configs/drive.py:cpu --workdir W \
      --variants ds2f,seg_only --seeds 2 --config.data.manual_dir=DIR
"""

from configs import cpu_recipe, default


def get_config(arg: str = ''):
  c = default.get_config()
  c.data.name = 'drive'
  c.data.config = ''
  c.data.hr_size = (584, 564)
  c.model.upscale = 2
  c.batch_size = 4
  c.num_train_steps = 300 * 20 // 4
  return cpu_recipe.apply(c, 'drive', arg)
