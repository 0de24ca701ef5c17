"""Training: state, optimiser, the jitted data-parallel step, and the train loop.

`train_and_evaluate(config, workdir)` is everything `--mode train` does; a
notebook can call it (or the pieces below) directly. The input pipeline (grain,
TFDS) and the image writer are imported only by the functions that read data,
so the step builders run with jax/flax/optax/orbax alone (the GPU benchmark
machine has nothing else); so is clu (the loop's averages and parameter table).
"""

import json
import math
import os
import re
import sys
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from ds2f_jax import checkpointing, confusion, curves, distributed, errors, fault_points, imaging
from ds2f_jax import init_from, losses, nonfinite, preemption, reporting, sharding, workdir_lock
from ds2f_jax.models import pretrained, registry


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def validate_config(config) -> None:
  """One-line errors for settings that cannot train, before anything is built."""
  registry.validate(config.model)
  hr = tuple(config.data.hr_size)
  r = config.model.upscale
  if len(hr) != 2 or any(int(s) != s or s < 1 for s in hr):
    raise ValueError(f'data.hr_size={hr} must be (height, width) in pixels')
  if hr[0] % r or hr[1] % r:
    raise ValueError(f'data.hr_size={hr} is not divisible by model.upscale={r}')
  registry.check_input_size(config.model, (hr[0] // r, hr[1] // r))
  registry.check_batch_size(config.model, config.batch_size)
  for key in ('num_train_steps', 'batch_size', 'log_every_steps', 'checkpoint_every_steps',
              'eval_every_steps', 'grad_accum_steps', 'keep_checkpoints'):
    if config[key] < 1:
      raise ValueError(f'{key}={config[key]} must be >= 1')
  for key in ('num_workers', 'prefetch', 'cache_mb'):  # 0 is valid for each (default.py).
    if config.data[key] < 0:
      raise ValueError(f'data.{key}={config.data[key]} must be >= 0')
  if config.eval.batch_size < 0:
    raise ValueError(f'eval.batch_size={config.eval.batch_size} must be >= 0 (0: batch_size)')
  if int(config.seed) != config.seed or config.seed < 0:
    raise ValueError(f'seed={config.seed} must be a non-negative integer')
  if config.dtype not in ('float32', 'bfloat16'):
    raise ValueError(f"dtype={config.dtype!r} must be 'float32' or 'bfloat16'")
  if config.optim.name not in ('sgd', 'adamw'):
    raise ValueError(f"optim.name={config.optim.name!r} must be 'sgd' or 'adamw'")
  _validate_numbers(config)


def _validate_numbers(config) -> None:
  """Optimiser and loss numbers that would train a NaN or meaningless model."""
  def number(key):
    node = config
    for part in key.split('.'):
      node = node[part]
    try:
      value = float(node)
    except (TypeError, ValueError):
      raise ValueError(f'{key}={node!r} must be a number') from None
    if not math.isfinite(value):
      raise ValueError(f'{key}={node} must be a finite number')
    return value

  o = 'optim.'
  if number(o + 'learning_rate') <= 0:
    raise ValueError(f'optim.learning_rate={config.optim.learning_rate} must be > 0')
  if number(o + 'weight_decay') < 0:
    raise ValueError(f'optim.weight_decay={config.optim.weight_decay} must be >= 0')
  if not 0 <= number(o + 'momentum') < 1:
    raise ValueError(f'optim.momentum={config.optim.momentum} must be in [0, 1)')
  if number(o + 'poly_power') <= 0:
    raise ValueError(f'optim.poly_power={config.optim.poly_power} must be > 0')
  if number(o + 'warmup_steps') < 0:
    raise ValueError(f'optim.warmup_steps={config.optim.warmup_steps} must be >= 0')
  for key in ('ce_weight', 'mse_weight', 'ssim_weight', 'rmi_weight'):
    if key in config.loss and number(f'loss.{key}') < 0:
      raise ValueError(f'loss.{key}={config.loss[key]} must be >= 0')
  if 'ssim_data_range' in config.loss and number('loss.ssim_data_range') <= 0:
    raise ValueError(f'loss.ssim_data_range={config.loss.ssim_data_range} must be > 0')


def lr_schedule(config) -> optax.Schedule:
  """Poly decay (power 0.9) over the real number of optimiser updates, reaching 0."""
  o = config.optim
  total = max(config.num_train_steps // config.grad_accum_steps, 1)
  warmup = min(o.warmup_steps, total - 1)
  poly = optax.polynomial_schedule(o.learning_rate, 0.0, o.poly_power, total - warmup)
  if warmup <= 0:
    return poly
  ramp = optax.linear_schedule(0.0, o.learning_rate, warmup)
  return optax.join_schedules([ramp, poly], [warmup])


def create_optimizer(config) -> optax.GradientTransformation:
  """SGD-Nesterov with coupled L2 on every parameter (official), or AdamW."""
  o, schedule = config.optim, lr_schedule(config)
  if o.name == 'sgd':
    tx = optax.chain(optax.add_decayed_weights(o.weight_decay),
                     optax.sgd(schedule, momentum=o.momentum, nesterov=True))
  else:
    tx = optax.adamw(schedule, weight_decay=o.weight_decay)
  if config.grad_accum_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=config.grad_accum_steps)
  return tx


def create_model(config):
  return registry.create_model(config.model, dtype=config.dtype, remat=config.remat)


def init_state(config, model, tx, mesh) -> TrainState:
  """Initial state, created directly replicated on the mesh."""
  h, w = imaging.input_size(config)
  x = jnp.zeros((1, h, w, config.model.in_channels), jnp.float32)

  def init(key):
    variables = model.init(key, x, train=True)
    params = variables['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get('batch_stats', {}), opt_state=tx.init(params))

  # 'rbg' keys: XLA:CPU compiles ~150 threefry initialisers for minutes, RngBitGenerator
  # in seconds. Init is replicated, so every device draws the same values.
  key = jax.random.key(config.seed, impl='rbg')
  state = jax.jit(init, out_shardings=sharding.replicated(mesh))(key)
  if config.model.pretrained:  # ImageNet backbone weights (and BN statistics).
    loaded = pretrained.load_backbone(
        {'params': state.params, 'batch_stats': state.batch_stats}, config.model.pretrained)
    state = state.replace(params=loaded['params'], batch_stats=loaded['batch_stats'])
  return state


def make_train_step(config, model, tx, mesh):
  """The jitted step: replicated state, batch split over 'data', state donated."""
  schedule = lr_schedule(config)

  def train_step(state: TrainState, batch):
    def loss_fn(params):
      outputs, new_vars = model.apply({'params': params, 'batch_stats': state.batch_stats},
                                      batch['lr'], train=True, mutable=['batch_stats'])
      loss, parts = losses.total_loss(outputs, batch, config.loss, config.model.num_classes)
      return loss, (parts, new_vars['batch_stats'])

    (loss, (parts, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    opt_step = state.step // config.grad_accum_steps
    grad_norm = optax.global_norm(grads)
    scalars = {'loss': loss, **parts, 'lr': schedule(opt_step), 'grad_norm': grad_norm}
    # A non-finite step never reaches the state; the host stops or skips (nonfinite.py).
    # What the step writes is checked too: a NaN learning rate leaves the loss finite.
    state_flags = nonfinite.finite_flags((params, batch_stats, opt_state))
    state_ok = nonfinite.all_true(state_flags)
    scalars[nonfinite.STATE_FINITE] = state_ok.astype(jnp.float32)  # Scalars are all float32.
    ok = nonfinite.all_true(jnp.concatenate(
        [nonfinite.finite_flags((loss, parts, grad_norm)), state_flags]))
    params, batch_stats, opt_state = nonfinite.guard(
        ok, (params, batch_stats, opt_state), (state.params, state.batch_stats, state.opt_state))
    new_state = TrainState(step=state.step + 1, params=params, batch_stats=batch_stats,
                           opt_state=opt_state)
    return new_state, scalars

  rep = sharding.replicated(mesh)
  return jax.jit(train_step, in_shardings=(rep, sharding.data_sharded(mesh)),
                 out_shardings=(rep, rep), donate_argnums=(0,))


def make_eval_step(config, model, mesh):
  """Segmentation path only; returns the batch's confusion matrix (padding excluded)."""
  num_classes = config.model.num_classes

  def eval_step(state: TrainState, batch):
    logits = model.apply({'params': state.params, 'batch_stats': state.batch_stats},
                         batch['lr'], train=False)
    preds = jnp.argmax(logits, axis=-1)
    weights = jnp.broadcast_to(batch['valid'][:, None, None], preds.shape)
    return confusion.confusion_matrix(batch['mask'], preds, num_classes, weights=weights)

  rep = sharding.replicated(mesh)
  return jax.jit(eval_step, in_shardings=(rep, sharding.data_sharded(mesh)), out_shardings=rep)


def evaluate(config, eval_step, state, mesh, split: str) -> dict:
  """Dice, IoU, Se, Sp, Acc (and more) from one confusion matrix over the split, at HR."""
  from ds2f_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  batch_size = config.eval.batch_size or config.batch_size
  cm = np.zeros((config.model.num_classes,) * 2, np.int64)
  for batch in input_pipeline.eval_batches(config, split, batch_size,
                                           process_index=jax.process_index(),
                                           process_count=jax.process_count()):
    batch = {k: batch[k] for k in ('lr', 'mask', 'valid')}
    cm += np.asarray(jax.device_get(eval_step(state, sharding.put_batch(batch, mesh))), np.int64)
  return {f'val/{k}': v for k, v in confusion.summarize_confusion(cm).items()}


def _prepare_workdir(workdir: str) -> str:
  workdir = os.path.abspath(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    # Unique per process: hosts of a multi-host job share the workdir and may share pids.
    probe = os.path.join(workdir, f'.write_probe_{jax.process_index()}_{os.getpid()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise PermissionError(f'workdir {workdir} is not writable: {e.strerror}') from None
  return workdir


def _write_config(config, workdir: str) -> None:
  path = os.path.join(workdir, 'config.json')
  with open(path + '.tmp', 'w') as f:
    json.dump(config.to_dict(), f, indent=2, default=list)
  os.replace(path + '.tmp', path)


def _newest_good(mngr) -> str:
  step = mngr.latest_step()
  if step is None:
    return f'No checkpoint was saved in {mngr.directory}.'
  return f'The newest good checkpoint is step {step} in {mngr.directory}.'


def _mean_scalars(rows: list[dict]) -> dict:
  """The mean of each scalar over the logged steps: one clu.metrics.Average per key."""
  from clu import metrics as clu_metrics  # pylint: disable=g-import-not-at-top  # Loop only.
  averages = clu_metrics.Collection.create(
      **{k: clu_metrics.Average.from_output(k) for k in rows[0]})
  total = averages.empty()
  for row in jax.device_get(rows):
    total = total.merge(averages.single_from_model_output(
        **{k: np.asarray(v, np.float32) for k, v in row.items()}))
  return {k: float(v) for k, v in total.compute().items()}


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains (resuming from the newest checkpoint in workdir) and evaluates; returns
  the last logged scalars.

  Holds WORKDIR/train.lock throughout (a second trainer is refused). Stops early
  with `errors.Preempted` after SIGTERM, `errors.Interrupted` after Ctrl-C (a
  checkpoint at the current step is saved first in both) or
  `errors.NonFiniteError` (docs/reliability.md).
  """
  validate_config(config)
  workdir = _prepare_workdir(workdir)
  single = jax.process_count() == 1
  with workdir_lock.hold(workdir, enabled=jax.process_index() == 0), \
      preemption.StopSignals(enabled=single) as signals:
    try:
      return _train(config, workdir, signals)
    except errors.Interrupted as e:  # A SystemExit: nobody else prints its line.
      print(e.message, file=sys.stderr, flush=True)  # Once the save has finished.
      raise
    except (jax.errors.JaxRuntimeError, MemoryError) as e:
      oom = out_of_memory_error(config, e)
      if oom is None:
        raise
      raise oom from None


def out_of_memory_error(config, e: BaseException) -> errors.OutOfMemoryError | None:
  """The one-line error for an allocation failure (XLA's RESOURCE_EXHAUSTED on a device,
  MemoryError on the host), naming what did not fit and what to lower; None for others."""
  text = str(e)
  if isinstance(e, MemoryError):
    what = 'host memory'
  elif 'RESOURCE_EXHAUSTED' in text:
    m = re.search(r'allocat\w*\s+([\d.]+\s*[KMGTP]?i?B|\d+ bytes)', text)
    size = m.group(1) if m else 'a buffer'
    if m and size.endswith(' bytes'):
      size = f'{int(size.split()[0]) / 2**30:.1f} GiB'
    what = f'{size} of device memory'
  else:
    return None
  (h, w), (hh, ww) = imaging.input_size(config), tuple(config.data.hr_size)
  crop = tuple(config.data.crop_size)
  return errors.OutOfMemoryError(
      f'out of memory: {what} could not be allocated for batch_size={config.batch_size} '
      f'(LR {h}x{w} -> HR {hh}x{ww}{f", crop {crop[0]}x{crop[1]}" if crop else ""}, '
      f'model.name={config.model.name!r}, model.width={config.model.width}, '
      f'dtype={config.dtype}); lower --config.batch_size (--config.grad_accum_steps keeps the '
      'effective batch), or data.crop_size, or set --config.remat=True')


def _train(config, workdir: str, signals: preemption.StopSignals) -> dict:
  from clu import parameter_overview  # pylint: disable=g-import-not-at-top
  from ds2f_jax import input_pipeline, visualize  # pylint: disable=g-import-not-at-top
  mesh = sharding.create_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  builder = distributed.prepare_dataset(config.data)
  input_pipeline.check_num_classes(builder, config.model.num_classes)
  for key in ('train_split', 'eval_split'):  # Refused now, not after hours of training.
    input_pipeline.split_source(config, config.data[key], f'data.{key}')
  model = create_model(config)
  tx = create_optimizer(config)
  state = init_state(config, model, tx, mesh)
  parameter_overview.log_parameter_overview(
      state.params, include_stats=False,
      msg=f'Model {config.model.name}/{config.model.variant} (train graph):')

  mngr = checkpointing.create_manager(workdir, config.keep_checkpoints)
  start_step, state = checkpointing.restore_latest(mngr, state, sharding.replicated(mesh))
  if start_step is None:
    start_step = 0
    state = init_from.initialize(config, state)  # config.init_from: another run's weights.
  else:
    logging.info('Resumed from %s at step %d.', mngr.directory, start_step)
  total = config.num_train_steps
  if start_step >= total:
    logging.info('Training already reached num_train_steps=%d in %s; nothing to do.', total,
                 workdir)
    mngr.close()
    return {}
  # Only now, with every check passed (data, splits, a resumable checkpoint of this
  # model): a refused run must not leave a config.json describing a model never trained.
  if jax.process_index() == 0:
    _write_config(config, workdir)

  train_step = make_train_step(config, model, tx, mesh)
  eval_step = make_eval_step(config, model, mesh)
  writer = reporting.MetricWriter(workdir)
  progress = reporting.Progress(total, initial=start_step, desc='train')
  batches = input_pipeline.train_iterator(
      config, start_step, process_index=jax.process_index(), process_count=jax.process_count())
  monitor = nonfinite.Monitor(
      config.train.skip_nonfinite_steps,
      where=lambda: _newest_good(mngr))

  pending, unchecked, last = [], [], {}
  t_log, s_log, saved = None, start_step, start_step
  try:
    for step in range(start_step, total):
      batch = sharding.put_batch(next(batches), mesh)
      fault_points.out_of_memory(step + 1)
      state, scalars = train_step(state, batch)
      unchecked.append(scalars)
      done = step + 1
      if t_log is None:  # The first step compiles; time throughput from its end.
        jax.block_until_ready(scalars)
        t_log, s_log = time.time(), done
        logging.info('First step (compile + run) done at %s.', time.strftime('%X'))
      log_now = done % config.log_every_steps == 0 or done == total
      eval_now = done % config.eval_every_steps == 0 or done == total
      save_now = eval_now or done % config.checkpoint_every_steps == 0
      if log_now or save_now:  # Points that sync anyway: read the non-finite flags here.
        pending += monitor.check(done - len(unchecked) + 1, unchecked)
        unchecked = []
      if log_now:
        last = _mean_scalars(pending) if pending else {}
        pending = []
        if monitor.skip:
          last['skipped_nonfinite_steps'] = monitor.take_skipped()
        now = time.time()
        if done > s_log:
          last['images_per_s'] = (done - s_log) * config.batch_size / max(now - t_log, 1e-9)
        t_log, s_log = now, done
        writer.write_scalars(done, last)
      val = None
      if eval_now:
        fault_points.reached('eval', done)
        val = evaluate(config, eval_step, state, mesh, config.data.eval_split)
        writer.write_scalars(done, val)
        curves.write(workdir)
        visualize.write_validation_images(config, model, state, writer, done)
        logging.info('step %d: %s', done, ' '.join(f'{k}={v:.4f}' for k, v in val.items()))
      if save_now:
        checkpointing.save(mngr, done, state, val)
        saved = done
      progress.update(done, {k: last[k] for k in ('loss', 'images_per_s') if k in last}
                      if log_now else None)
      fault_points.reached('step', done)
      if signals.requested or (jax.process_count() > 1 and mngr.reached_preemption(done)):
        pending += monitor.check(done - len(unchecked) + 1, unchecked)
        unchecked = []
        if saved != done:
          checkpointing.save(mngr, done, state)
        raise signals.stop(done, mngr.directory)
  finally:
    batches.close()  # Stops the reader threads now, not at interpreter exit (docs/reliability.md).
    try:
      checkpointing.finish(mngr)
    finally:
      writer.close()
      progress.close()
  if monitor.total_skipped:
    logging.warning('%d non-finite steps were skipped (train.skip_nonfinite_steps).',
                    monitor.total_skipped)
  return last
