"""NaN / Inf in a step: stop naming the step and the part, or skip and count it."""

import logging
import math
import os

import jax.numpy as jnp
import numpy as np
import pytest

from ds2f_jax import errors, input_pipeline, nonfinite, workdir_lock
from tests import scenario as rel

BAD_STEP = 3


def _poison_step(monkeypatch, bad_step):
  """Training batch of step `bad_step` (1-based) gets a NaN HR target."""
  real = input_pipeline.train_iterator

  def iterator(config, start_step, **kwargs):
    for done, batch in enumerate(real(config, start_step, **kwargs), start=start_step + 1):
      if done == bad_step:
        batch = dict(batch, hr=np.full_like(batch['hr'], np.nan))
      yield batch

  monkeypatch.setattr(input_pipeline, 'train_iterator', iterator)


def test_nan_stops_the_run_naming_step_and_parts(synthetic_data_dir, reference_run, tmp_path,
                                                 monkeypatch):
  _poison_step(monkeypatch, BAD_STEP)
  w = str(tmp_path / 'w')
  with pytest.raises(errors.NonFiniteError) as e:
    rel.run_in_process(rel.scenario_config(synthetic_data_dir), w)
  msg = str(e.value)
  assert '\n' not in msg
  # A NaN target poisons MSE and SSIM (and through them the total and the
  # gradients); CE and RMI only see the mask and stay finite.
  assert msg.startswith('training step 3 went non-finite in loss, mse, ssim, gradients '
                        '(loss=nan, mse=nan, ssim=nan, grad_norm=nan); stopped')
  assert f'The newest good checkpoint is step 2 in {w}/checkpoints.' in msg
  assert 'train.skip_nonfinite_steps=True' in msg
  # The last good checkpoint is kept, untouched, and nothing after it was saved.
  assert rel.checkpoint_entries(w) == ['2']
  rel.assert_same_state(rel.load_checkpoint(reference_run, 2), rel.load_checkpoint(w, 2))
  assert not os.path.exists(os.path.join(w, workdir_lock.LOCK_NAME))


def test_skip_nonfinite_steps_skips_the_update_and_counts_it(synthetic_data_dir, reference_run,
                                                             tmp_path, monkeypatch, caplog):
  _poison_step(monkeypatch, BAD_STEP)
  cfg = rel.scenario_config(synthetic_data_dir)
  cfg.train.skip_nonfinite_steps = True
  cfg.checkpoint_every_steps = BAD_STEP
  w = str(tmp_path / 'w')
  with caplog.at_level(logging.WARNING):
    last = rel.run_in_process(cfg, w)
  assert math.isfinite(last['loss'])
  rows = {r['step']: r for r in rel.metric_rows(w) if 'skipped_nonfinite_steps' in r}
  assert sorted(rows) == [1, 2, 3, 4, 5, 6]
  assert [rows[s]['skipped_nonfinite_steps'] for s in rows] == [0, 0, 1, 0, 0, 0]
  assert 'loss' not in rows[3]  # Its only step was skipped: nothing to average.
  assert all(math.isfinite(rows[s]['loss']) for s in (1, 2, 4, 5, 6))
  assert 'Step 3: non-finite loss, mse, ssim, gradients' in caplog.text
  assert '1 non-finite steps were skipped' in caplog.text
  # Inside the jitted step the update was dropped: the state after step 3 is the
  # reference's after step 2 (params, BatchNorm statistics, optimiser state), bit
  # for bit, but for the step counter.
  assert rel.checkpoint_entries(w) == ['3', '6']
  s2, s3 = rel.load_checkpoint(reference_run, 2), rel.load_checkpoint(w, 3)
  assert s2.pop("['step']") == 2 and s3.pop("['step']") == 3
  rel.assert_same_state(s2, s3, 'skipped update')


def test_inf_in_gradients_alone_is_named():
  rows = [{'loss': 1.0, 'ce': 0.5, 'lr': 0.1, 'grad_norm': 2.0},
          {'loss': 1.0, 'ce': 0.5, 'lr': 0.1, 'grad_norm': float('inf')}]
  stop = nonfinite.Monitor(False, where=lambda: 'Checkpoints: W.')
  with pytest.raises(errors.NonFiniteError, match=r'^training step 8 went non-finite in '
                     r'gradients \(grad_norm=inf\); stopped .* Checkpoints: W\. Set'):
    stop.check(7, rows)
  skip = nonfinite.Monitor(True, where=lambda: '')
  assert skip.check(7, rows) == [rows[0]]
  assert (skip.take_skipped(), skip.take_skipped(), skip.total_skipped) == (1, 0, 1)


def test_guard_keeps_the_old_state_bitwise():
  new = {'w': jnp.array([1.5, -2.0]), 'b': jnp.array(3, jnp.int32)}
  old = {'w': jnp.array([0.25, 7.0]), 'b': jnp.array(9, jnp.int32)}
  ok = nonfinite.tree_is_finite((jnp.float32(1.0), {'ce': jnp.float32(0.2)}, jnp.float32(3.0)))
  bad = nonfinite.tree_is_finite((jnp.float32(1.0), {'ce': jnp.float32(jnp.nan)},
                                  jnp.float32(3.0)))
  assert bool(ok) and not bool(bad)
  for flag, want in ((ok, new), (bad, old)):
    got = nonfinite.guard(flag, new, old)
    for k in want:
      np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(want[k]))


def test_the_finite_check_is_computed_once_not_per_leaf():
  """XLA must not copy the all-leaves check into each leaf's select: with one
  chain of `&`s per leaf the compiled step grew quadratically (300 leaves: ~90k
  ops, a train step that took a minute to compile)."""
  import jax  # pylint: disable=g-import-not-at-top
  leaves = 300
  old = [jnp.full((3, 4), float(i)) for i in range(leaves)]

  def step(old):
    new = [x + 1 for x in old]
    return nonfinite.guard(nonfinite.tree_is_finite(new), new, old)

  text = jax.jit(step).lower(old).compile().as_text()
  assert text.count(' and(') < 3 * leaves, text.count(' and(')
  got = jax.jit(step)(old)
  np.testing.assert_array_equal(np.asarray(got[7]), np.full((3, 4), 8.0))
