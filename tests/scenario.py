"""The suite's shared training scenario: its config, in-process runs, and readers of a
workdir.

The fault tests (tests/reliability/) and the training, evaluation and import tests
all train the same 6-step program (tiny synthetic config, checkpoints at 2, 4, 6,
evaluation at 6), so the XLA persistent cache compiles it once for the in-process
runs and for the trainer subprocesses alike.
In-process runs also reuse the traced step functions (`programs_reused`):
tracing the model costs seconds per run, and the programs are identical.
"""

import contextlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import synthetic
from ds2f_jax import train

# ---------------------------------------------------------------------------
# The shared scenario.

STEPS, CHECKPOINT_EVERY = 6, 2
# The same settings as command-line overrides, for main.py subprocesses.
CLI_OVERRIDES = (f'--config.num_train_steps={STEPS}',
                 f'--config.checkpoint_every_steps={CHECKPOINT_EVERY}',
                 f'--config.eval_every_steps={STEPS}')
TIMING_KEYS = ('images_per_s',)


def scenario_config(data_dir):
  c = synthetic.get_config('tiny')
  c.data.data_dir = data_dir
  c.num_train_steps = STEPS
  c.checkpoint_every_steps = CHECKPOINT_EVERY
  c.eval_every_steps = STEPS
  return c


# Keys that change what the loop does (or the values it starts from), not what the
# jitted programs compute.
_LOOP_ONLY = ('log_every_steps', 'checkpoint_every_steps', 'eval_every_steps',
              'keep_checkpoints', 'train', 'init_from')
_MEMO = {}


def _program_key(kind, config):
  d = config.to_dict()
  for k in _LOOP_ONLY:
    d.pop(k, None)
  d['data'].pop('data_dir', None)
  return kind, json.dumps(d, sort_keys=True, default=str)


@contextlib.contextmanager
def programs_reused():
  """train_and_evaluate with init/train/eval programs traced once per config."""
  real_init, real_step, real_eval = train.init_state, train.make_train_step, train.make_eval_step

  def init_state(config, model, tx, mesh):
    key = _program_key('init', config)
    if key not in _MEMO:
      _MEMO[key] = real_init(config, model, tx, mesh)
    return jax.tree_util.tree_map(jnp.copy, _MEMO[key])  # The step donates its input.

  def make_train_step(config, model, tx, mesh):
    key = _program_key('train', config)
    if key not in _MEMO:
      _MEMO[key] = real_step(config, model, tx, mesh)
    return _MEMO[key]

  def make_eval_step(config, model, mesh):
    key = _program_key('eval', config)
    if key not in _MEMO:
      _MEMO[key] = real_eval(config, model, mesh)
    return _MEMO[key]

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(train, 'init_state', init_state)
    mp.setattr(train, 'make_train_step', make_train_step)
    mp.setattr(train, 'make_eval_step', make_eval_step)
    yield


def run_in_process(config, workdir):
  with programs_reused():
    return train.train_and_evaluate(config, str(workdir))


# ---------------------------------------------------------------------------
# Reading workdirs.


def metric_rows(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def last_rows_by_step(workdir, drop=TIMING_KEYS):
  """Training and evaluation rows per step; a rerun step's last record wins."""
  out = {}
  for r in metric_rows(workdir):
    kind = 'val' if any(k.startswith('val/') for k in r) else 'train'
    out[(r['step'], kind)] = {k: v for k, v in r.items() if k not in drop}
  return out


def committed_steps(workdir):
  d = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(d):
    return []
  return sorted(int(n) for n in os.listdir(d) if n.isdigit())


def checkpoint_entries(workdir):
  d = os.path.join(workdir, 'checkpoints')
  return sorted(os.listdir(d)) if os.path.isdir(d) else []


def load_checkpoint(workdir, step):
  """A checkpoint's state as a flat {path: numpy array}, read without a target."""
  path = os.path.join(workdir, 'checkpoints', str(step), 'state')
  with ocp.StandardCheckpointer() as ckptr:
    tree = ckptr.restore(path)
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in flat}


def assert_same_state(a, b, what=''):
  assert sorted(a) == sorted(b), what
  for k in a:
    assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, (what, k)
    assert np.array_equal(a[k], b[k], equal_nan=True), (what, k)
