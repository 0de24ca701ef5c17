"""Retention and selection: the newest N plus the best by val/dice, by name."""

import jax.numpy as jnp
import pytest

from ds2f_jax import checkpointing


def test_keeps_latest_n_and_best_and_resolves_names(tmp_path):
  mngr = checkpointing.create_manager(str(tmp_path), keep=2)
  for step, dice in [(1, 0.5), (2, 0.9), (3, None), (4, 0.6), (5, None), (6, None)]:
    checkpointing.save(mngr, step, {'w': jnp.full(3, step, jnp.float32)},
                       None if dice is None else {'val/dice': dice})
    mngr.wait_until_finished()
  assert list(mngr.all_steps()) == [2, 5, 6]
  assert checkpointing.resolve_step(mngr, 'best') == 2
  assert checkpointing.resolve_step(mngr, 'latest') == 6
  assert checkpointing.resolve_step(mngr, '5') == 5
  restored = checkpointing.restore(mngr, 2, {'w': jnp.zeros(3, jnp.float32)}, None)
  assert restored['w'].tolist() == [2.0, 2.0, 2.0]
  with pytest.raises(FileNotFoundError, match='checkpoint step 3 not in'):
    checkpointing.resolve_step(mngr, '3')
  with pytest.raises(ValueError, match="eval.checkpoint='last'"):
    checkpointing.resolve_step(mngr, 'last')
  mngr.close()


def test_empty_workdir_is_named(tmp_path):
  mngr = checkpointing.create_manager(str(tmp_path), keep=1)
  with pytest.raises(FileNotFoundError, match=f'no checkpoint in {tmp_path}'):
    checkpointing.resolve_step(mngr, 'best')
