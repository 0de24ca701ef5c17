"""DS2F in JAX: one entry point, one call per mode (`ds2f` once pip-installed).

  python main.py --config configs/synthetic.py --workdir /tmp/ds2f_demo
  ds2f --config configs/synthetic.py --workdir /tmp/ds2f_demo    # The same, installed.
  python main.py --config configs/drive.py --workdir W --mode eval --config.eval.split=test
  python main.py --config configs/drive.py --workdir W --mode predict --input IMG_OR_DIR \
      --output OUT_DIR [--mask MASK_OR_DIR]
  python main.py --config configs/drive.py --workdir W --mode export   # -> W/export/
  python main.py --config configs/default.py --workdir W --mode import --input official.pth

The modes, exit codes and flag errors live in ds2f_jax/cli.py (shared with
`python -m ds2f_jax.ablate`). Multi-process jobs (TPU pod slices, SLURM,
JAX_COORDINATOR_ADDRESS) start jax.distributed before anything else: see
ds2f_jax/distributed.py.
"""

from absl import flags

from ds2f_jax import cli

cli.define_config_flag('A configs/*.py file (plus --config.key=value).')
flags.DEFINE_string('workdir', None, 'Checkpoints, logs and reports go here.')
flags.DEFINE_enum('mode', 'train', list(cli.MODES), 'What to do.')
flags.DEFINE_string('input', None, '--mode predict: an image file or a folder of images. '
                    '--mode import: an official DS2F checkpoint (.pth).')
flags.DEFINE_string('output', None, '--mode predict: folder for the probability maps, masks '
                    'and overlays.')
flags.DEFINE_string('mask', None, '--mode predict: optional ground truth (a file for a file '
                    '--input, a folder of same-named masks for a folder); overlays then show '
                    'TP/FP/FN.')
flags.mark_flags_as_required(['config'])
FLAGS = flags.FLAGS


def main(argv):
  cli.run(argv, cli.run_mode, FLAGS.mode, FLAGS.config, FLAGS.workdir, FLAGS)


def run() -> None:
  """The `ds2f` console command and `python main.py`."""
  cli.start(main)


if __name__ == '__main__':
  run()
