"""The `:cpu` argument of the vessel configs: a reduced recipe for 2 CPU cores.

One DS2F-UNet run at r = 2 that trains on real photos, and is evaluated at the
original resolution with both protocols, in <= 40 minutes on an idle 2-core
x86-64 machine (compile and evaluations included). Against the paper-scale
recipe of each dataset config it reduces only what costs time:

- width 16 instead of 64: 1/16 of the convolution FLOPs (17.2 GFLOP per
  256x256 HR training image instead of 583 at 512x512 / 4);
- random 256x256 HR crops (128x128 LR) instead of whole images: the step
  cost is linear in pixels, and 4 crops a step keep BatchNorm statistics
  stable at a quarter of one CHASE_DB1 photo's pixels;
- 1500 steps of batch 4 (6000 crops; on CHASE_DB1's 16 training photos left
  by the 20 % hold-out, 375 epochs counted in crops, ~25 in pixels) instead
  of 300 epochs of whole images;
- learning rate 0.05 (not 0.01) after 30 linear warm-up steps, then the same
  poly decay (power 0.9) reaching 0 at the last step: a short schedule needs
  a larger step. 0.1 was tried for 77 steps on CHASE_DB1 (2026-11-29): the
  SR stream's MSE jumped from 0.21 to 0.83 at the peak while CE kept falling;
  0.05 trained stably for 1000 steps in an earlier run of this step size;
- validation (the carved 20 % hold-out, Dice at HR) every 250 steps, the
  best of those 6 checkpoints evaluated on the test split.

Everything else is the paper's: losses and weights, SGD-Nesterov with coupled
weight decay 1e-4, augmentation, r = 2, the dataset's HR size for validation
and test.

Time: the step count fills the 40 minutes. On the idle 2-core machine of
docs/results.md (jax 0.10.2) DS2F-UNet trained this recipe on CHASE_DB1 at
0.71-0.76 steps/s (~2.9 crops/s: the width-16 step at batch 4, 256x256 HR,
and the reader threads that augment the full-size photo each crop comes
from, decoded once and cached); the run took 36 min 07 s from launch to the
test report, compiles, 6 validations and the full-size test evaluation
included. Width 24 would cost ~1.6x per step, i.e. ~900 steps in the same
time; the recipe keeps more steps. seg_only trains the same recipe in ~11
minutes.

  python main.py --config configs/chase_db1.py:cpu --workdir W \
      --config.data.manual_dir=DIR
  python -m ds2f_jax.ablate --config configs/chase_db1.py:cpu --workdir W \
      --variants ds2f,seg_only --seeds 2 --config.data.manual_dir=DIR
"""

CROP = (256, 256)
WIDTH = 16
BATCH = 4
STEPS = 1500
LEARNING_RATE = 0.05
WARMUP_STEPS = 30
EVALS = 6


def apply(c, name: str, arg: str):
  """`c` with the CPU recipe when arg == 'cpu'; unchanged for ''; else an error."""
  if not arg:
    return c
  if arg != 'cpu':
    raise ValueError(f'configs/{name}.py: unknown argument {arg!r} (use "cpu" or nothing)')
  c.model.width = WIDTH
  c.data.crop_size = CROP
  c.batch_size = BATCH
  c.num_train_steps = STEPS
  c.optim.learning_rate = LEARNING_RATE
  c.optim.warmup_steps = WARMUP_STEPS
  c.log_every_steps = 10
  c.eval_every_steps = STEPS // EVALS
  c.checkpoint_every_steps = STEPS // EVALS
  c.eval.batch_size = 2  # Full-size photos; 2 divides the 4-photo hold-outs.
  return c
