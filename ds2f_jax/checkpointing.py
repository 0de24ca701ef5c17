"""Orbax checkpoints under WORKDIR/checkpoints: the newest N plus the best by val Dice.

Each step directory is committed atomically by orbax, so a killed run leaves
either a complete step or an uncommitted temporary that is never restored.
"""

import os

import jax
import orbax.checkpoint as ocp
from absl import logging

BEST_METRIC = 'val/dice'


def _best_metric(metrics) -> float:
  return float(metrics.get(BEST_METRIC, float('-inf')))


def create_manager(workdir: str, keep: int, read_only: bool = False) -> ocp.CheckpointManager:
  policies = ocp.checkpoint_managers
  options = ocp.CheckpointManagerOptions(
      preservation_policy=policies.AnyPreservationPolicy([
          policies.LatestN(n=max(int(keep), 1)),
          policies.BestN(get_metric_fn=_best_metric, n=1,
                         keep_checkpoints_without_metrics=False),
      ]),
      best_fn=_best_metric,  # Without it orbax does not store a save's metrics at all.
      best_mode='max',
      read_only=read_only,
      create=not read_only,
  )
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), 'checkpoints'),
                               options=options)


def save(mngr: ocp.CheckpointManager, step: int, state, metrics: dict | None = None) -> None:
  """Asynchronous save; `metrics` (e.g. {'val/dice': ...}) rank it for 'best'."""
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
            metrics=metrics or None)


def best_step(mngr: ocp.CheckpointManager) -> int | None:
  scored = [(s, mngr.metrics(s)) for s in mngr.all_steps()]
  scored = [(_best_metric(m), s) for s, m in scored if m and BEST_METRIC in m]
  return max(scored)[1] if scored else None


def resolve_step(mngr: ocp.CheckpointManager, which) -> int:
  """'latest' | 'best' | a step number -> an existing step, or a one-line error."""
  steps = mngr.all_steps()
  where = mngr.directory
  if not steps:
    raise FileNotFoundError(f'no checkpoint in {where}: train first (--mode train)')
  which = str(which)
  if which == 'latest':
    return mngr.latest_step()
  if which == 'best':
    step = best_step(mngr)
    if step is None:
      logging.warning('No checkpoint in %s carries %s; using the latest.', where, BEST_METRIC)
      return mngr.latest_step()
    return step
  if not which.isdigit():
    raise ValueError(f'eval.checkpoint={which!r}: use best, latest or a step number')
  if int(which) not in steps:
    raise FileNotFoundError(f'checkpoint step {which} not in {where}; available: {list(steps)}')
  return int(which)


def restore(mngr: ocp.CheckpointManager, step: int, target, sharding):
  """Restores `step` into the structure of `target`, placed with `sharding`."""
  abstract = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), target)
  restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
  return restored['state']
