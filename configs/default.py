"""Every config key with its default; other configs start from this one.

Defaults are the paper's (official code 91776aa, see `docs/method.md`):
DS2F-UNet, width 64, r = 2, SGD-Nesterov lr 0.01 with poly decay, all loss
weights 1.0. Dataset configs override `data.*`, the sizes and the schedule.

  python main.py --config configs/default.py --workdir /tmp/ds2f
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_train_steps = 10_000
  c.batch_size = 8  # Global batch, split over every device of every process.
  c.log_every_steps = 50
  c.checkpoint_every_steps = 500
  c.eval_every_steps = 500
  c.keep_checkpoints = 3  # Newest N kept, plus the best by validation Dice.
  c.dtype = 'float32'  # Compute dtype: float32 | bfloat16 (params stay float32).
  c.remat = False  # jax.checkpoint the decoder stages (large HR sizes).
  c.grad_accum_steps = 1  # > 1 wraps the optimiser in optax.MultiSteps.
  # A new run starting from the params and BN statistics of another workdir's newest
  # checkpoint or of an export folder (fresh optimiser, step 0); '' = initialisation.
  # A workdir that already holds checkpoints resumes from them instead.
  c.init_from = ''

  c.data = ml_collections.ConfigDict()
  c.data.name = 'synthetic_fundus'  # A TFDS builder under ds2f_jax/datasets/.
  c.data.config = ''  # TFDS builder config name ('' = the builder's default).
  c.data.data_dir = ''  # Where prepared datasets live ('' = ~/tensorflow_datasets).
  c.data.manual_dir = ''  # Where manually downloaded archives are.
  c.data.hr_size = (512, 512)  # (height, width) of the HR target; LR = HR / r.
  c.data.train_split = 'train'
  c.data.eval_split = 'validation'  # Carved from train when the dataset has none.
  c.data.val_fraction = 0.2  # Size of that carved hold-out (official: 20 %, fixed seed).
  c.data.augment = True  # The official recipe (colour jitter, flips, shift-rotate).
  c.data.crop_size = ()  # (h, w) random HR crops for patch training; () = whole image.
  c.data.num_workers = 0  # Threads reading and augmenting examples; 0 = one per CPU core.
  c.data.prefetch = 4  # Batches prepared ahead of the step.
  # Decoded training images kept in memory (PNG decoding is half the per-image cost);
  # the vessel datasets fit whole, larger ones are cached up to the budget. 0 = off.
  c.data.cache_mb = 2048

  c.model = ml_collections.ConfigDict()
  c.model.name = 'ds2f_unet'  # ds2f_unet | ds2f_deeplabv3plus.
  c.model.width = 64  # Channels of the first UNet stage (the paper's 64).
  c.model.upscale = 2  # r: HR = LR * r.
  c.model.num_classes = 2  # Binary tasks use 2 classes with softmax CE.
  c.model.in_channels = 3
  c.model.variant = 'ds2f'  # ds2f | ds2f_after | dual_stream | seg_only | seg_hr.
  c.model.sfem_hidden = 32  # CrossGL hidden width.
  c.model.rcab_global_pool = False  # True = the earlier SE-style RCAB (docs/method.md D1).
  c.model.backbone = 'resnet50'  # ds2f_deeplabv3plus: resnet50 | resnet101.
  c.model.output_stride = 8  # ds2f_deeplabv3plus: 8 (ASPP 12/24/36) | 16 (ASPP 6/12/18).
  c.model.pretrained = ''  # ds2f_deeplabv3plus: ImageNet ResNet .npz ('' = random init).

  c.loss = ml_collections.ConfigDict()
  c.loss.ce_weight = 1.0  # CE(out, mask).
  c.loss.mse_weight = 1.0  # MSE(sr, hr).
  c.loss.ssim_weight = 1.0  # 1 - SSIM(fusion_sr, hr).
  c.loss.rmi_weight = 1.0  # RMI(fusion_seg, mask).
  c.loss.ssim_data_range = 1.0  # As implemented; the true range of [-1, 1] is 2.

  c.optim = ml_collections.ConfigDict()
  c.optim.name = 'sgd'  # sgd (Nesterov, coupled L2) | adamw.
  c.optim.learning_rate = 0.01
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  c.optim.poly_power = 0.9
  c.optim.warmup_steps = 0

  c.train = ml_collections.ConfigDict()
  c.train.skip_nonfinite_steps = False  # NaN/Inf step: stop, naming it (False) | skip, count.

  c.eval = ml_collections.ConfigDict()
  c.eval.split = 'test'
  c.eval.checkpoint = 'best'  # best | latest | a step number.
  c.eval.batch_size = 0  # 0 = batch_size.
  c.eval.num_images_tb = 4  # Validation images shown in TensorBoard.
  c.eval.sr_metrics = False

  c.export = ml_collections.ConfigDict()
  c.export.checkpoint = 'best'  # --mode export: best | latest | a step number.
  return c
