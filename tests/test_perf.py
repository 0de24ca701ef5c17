"""Performance plumbing: bf16 tracks float32, one compile per step function, the harnesses run."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ds2f_jax import imaging, input_pipeline, sharding, train
from ds2f_jax.models import ds2f
from tests import jaxpr_walk

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, 'benchmarks')
# Fired around every XLA compile (persistent-cache hits included), with fun_name.
_COMPILE_EVENT = '/jax/core/compile/backend_compile_duration'


def _load(name):
  spec = importlib.util.spec_from_file_location(f'_bench_{name}', os.path.join(BENCH, f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _conv_dtypes(fn, *args):
  """Operand dtypes of every conv_general_dilated in fn's jaxpr (nested ones included)."""
  return [str(e.invars[0].aval.dtype) for e in jaxpr_walk.eqns(jax.make_jaxpr(fn)(*args).jaxpr)
          if e.primitive.name == 'conv_general_dilated']


def _run_steps(cfg, batches, mesh, eval_after=None):
  """Losses of len(batches) steps from the seed's init; evaluates after step eval_after."""
  model, tx = train.create_model(cfg), train.create_optimizer(cfg)
  state = train.init_state(cfg, model, tx, mesh)
  step = train.make_train_step(cfg, model, tx, mesh)
  eval_step = train.make_eval_step(cfg, model, mesh)
  conv_dtypes = _conv_dtypes(step, state, batches[0])
  losses = []
  for i, batch in enumerate(batches):
    state, scalars = step(state, batch)
    losses.append(jax.device_get(scalars))
    if eval_after == i + 1:
      val = train.evaluate(cfg, eval_step, state, mesh, cfg.data.eval_split)
      assert 0.0 <= val['val/dice'] <= 1.0
  return state, losses, conv_dtypes


@pytest.mark.slow
def test_bf16_tracks_float32_and_each_step_compiles_once(tiny_config):
  cfg32 = tiny_config
  cfg16 = cfg32.copy_and_resolve_references()
  cfg16.dtype = 'bfloat16'
  mesh = sharding.create_mesh()
  it = input_pipeline.train_iterator(cfg32, 0)
  batches = [sharding.put_batch({k: v for k, v in next(it).items()}, mesh) for _ in range(4)]

  compiled = []

  def listener(event, duration, **kwargs):
    del duration
    if event == _COMPILE_EVENT:
      compiled.append(str(kwargs.get('fun_name')))

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    _, f32, dt32 = _run_steps(cfg32, batches, mesh)
    compiled.clear()
    state16, b16, dt16 = _run_steps(cfg16, batches, mesh, eval_after=2)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)

  # bf16 run: 4 steps with an evaluation in between -> exactly one compile per function.
  assert sum('train_step' in n for n in compiled) == 1, compiled
  assert sum('eval_step' in n for n in compiled) == 1, compiled
  assert len(compiled) == 3, compiled  # ... plus the init of the state.

  # The compute really is bf16 (every conv), and float32 everywhere it must be.
  assert dt32 and set(dt32) == {'float32'}
  assert len(dt16) == len(dt32) and set(dt16) == {'bfloat16'}
  leaves = jax.tree_util.tree_leaves((state16.params, state16.batch_stats, state16.opt_state))
  assert {str(x.dtype) for x in leaves if jnp.issubdtype(x.dtype, jnp.floating)} == {'float32'}
  for row in b16:
    assert all(np.asarray(v).dtype == np.float32 for v in row.values())

  # Loss curves agree. Measured (width 4, lr 0.05): step 1 within 8e-4, step 2 within 0.2 %
  # (NumPy augmentation) or 1.3 % (OpenCV's, whose HSV conversion differs by one level on some
  # pixels: the same batches up to that), steps 3-4 within 2.5 % per term; float32 with 2^-9
  # relative noise on its input drifts as far (1.6 %). Before bias/broadcast gradients were
  # summed in float32, step 2's CE was 4.7 % off.
  for key in ('loss', 'ce', 'mse', 'ssim', 'rmi'):
    a = np.array([r[key] for r in f32], np.float64)
    b = np.array([r[key] for r in b16], np.float64)
    rel = np.abs(b - a) / np.abs(a)
    assert np.all(rel < [1e-3, 2e-2, 4e-2, 4e-2]), (key, rel)
  # ... and bf16 is not float32 in disguise.
  assert any(r16['loss'] != r32['loss'] for r16, r32 in zip(b16, f32))


def _bf16_reductions(jaxpr):
  """(primitive, shape, scope) of every reduce_sum over bfloat16 operands, nested included."""
  return [(e.primitive.name, e.invars[0].aval.shape, str(e.source_info.name_stack))
          for e in jaxpr_walk.eqns(jaxpr) if e.primitive.name == 'reduce_sum'
          and any(v.aval.dtype == jnp.bfloat16 for v in e.invars)]


def test_bf16_gradients_sum_in_float32(tiny_config):
  """XLA sums bfloat16 in bfloat16 (on XLA:CPU, 8192 ones sum to 1024), so no gradient may
  reduce over pixels in bfloat16 (bias, depthwise kernel, broadcast gates)."""
  x = jnp.ones((2, 64, 64, 2), jnp.bfloat16)
  assert float(jax.jit(lambda x: jax.lax.reduce(x, jnp.bfloat16(0), jax.lax.add, (0, 1, 2, 3)))(
      x)) < 8192  # The hazard itself (if XLA ever fixes it, this test can go).
  cfg = tiny_config
  cfg.dtype = 'bfloat16'
  cfg.model.rcab_global_pool = True  # Covers the SE-style gate's broadcast too.
  mesh = sharding.create_mesh()
  model, tx = train.create_model(cfg), train.create_optimizer(cfg)
  state = jax.eval_shape(lambda: train.init_state(cfg, model, tx, mesh))
  h, w = cfg.data.hr_size
  batch = {'lr': jax.ShapeDtypeStruct((2, h // 2, w // 2, 3), jnp.float32),
           'hr': jax.ShapeDtypeStruct((2, h, w, 3), jnp.float32),
           'mask': jax.ShapeDtypeStruct((2, h, w), jnp.int32)}
  step = train.make_train_step(cfg, model, tx, mesh)
  assert _bf16_reductions(jax.make_jaxpr(step)(state, batch).jaxpr) == []


_BLOCKED_RUN = textwrap.dedent('''
    import runpy, sys
    class Block:  # The GPU machine has none of these (TensorFlow is absent here too).
      def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('ml_collections', 'clu', 'tensorflow_datasets', 'grain'):
          raise ImportError(f'{{name}} is blocked (absent on the GPU machine)')
    sys.meta_path.insert(0, Block())
    sys.argv = [{path!r}] + {argv!r}
    runpy.run_path({path!r}, run_name='__main__')
''')


@pytest.mark.slow
def test_train_harness_runs_without_data_libraries():
  # seg_only: the same harness path at 0.43x DS2F's compile (the bf16 DS2F step is pinned above).
  argv = ['--width', '4', '--lr-size', '32', '--batch-size', '2', '--steps', '2', '--warmup', '1',
          '--dtype', 'bfloat16', '--peak-tflops', '1', '--variant', 'seg_only']
  script = _BLOCKED_RUN.format(path=os.path.join(BENCH, 'train_throughput.py'), argv=argv)
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.environ['DS2F_TEST_XLA_CACHE'],
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0.5')
  proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                        timeout=600, cwd=ROOT, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
  assert len(lines) == 1, proc.stdout
  r = json.loads(lines[0][len('RESULT '):])
  assert (r['mode'], r['variant'], r['dtype'], r['batch_size'], r['lr_size'], r['hr_size'],
          r['width']) == ('train', 'seg_only', 'bfloat16', 2, [32, 32], [64, 64], 4)
  assert r['compile_s'] > 0 and r['median_step_s'] > 0 and np.isfinite(r['final_loss'])
  assert r['images_per_s'] == pytest.approx(2 / r['median_step_s'])
  assert r['flops_per_step'] > 0
  assert r['achieved_tflops'] == pytest.approx(r['flops_per_step'] / r['median_step_s'] / 1e12)
  assert r['fraction_of_peak'] == pytest.approx(r['achieved_tflops'])
  assert r['compiled_bytes'] > 0


def test_train_harness_names_bad_model_and_size(capsys):
  bench = _load('train_throughput')
  assert bench.main(['--model', 'ds2f_nope', '--steps', '1']) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "model.name='ds2f_nope' is unknown" in err[0]
  assert bench.main(['--lr-size', '8', '--width', '4']) == 2
  assert 'too small' in capsys.readouterr().err
  with pytest.raises(SystemExit):
    bench.parse_args(['--lr-size', '12y4'])
  assert bench.parse_size('192x256') == (192, 256) and bench.parse_size('64') == (64, 64)


def test_harness_batch_has_each_variants_sizes():
  """The harness feeds each variant what the input pipeline would (seg_only at LR,
  seg_hr at HR, the rest LR -> HR): a seg_only run once failed on HR masks."""
  bench = _load('train_throughput')
  for variant in ds2f.VARIANTS:
    args = bench.parse_args(['--lr-size', '16x24', '--variant', variant, '--width', '4'])
    cfg = bench.build_config(args)
    batch = bench.synthetic_batch(cfg, 3)
    (ih, iw), (oh, ow) = imaging.io_sizes(cfg.data.hr_size, cfg.model.upscale, variant)
    assert batch['lr'].shape == (3, ih, iw, 3), variant
    assert batch['hr'].shape == (3, oh, ow, 3) and batch['mask'].shape == (3, oh, ow), variant
    assert batch['lr'].dtype == batch['hr'].dtype == np.float32 and batch['mask'].dtype == np.int32


def test_harness_config_stand_in_matches_ml_collections():
  bench = _load('train_throughput')
  from configs import default
  ref = default.get_config().to_dict()
  stand_in = bench._ConfigDict()
  stand_in.a = bench._ConfigDict(b=1)
  assert stand_in.a.b == 1 and stand_in.to_dict() == {'a': {'b': 1}}
  with pytest.raises(AttributeError):
    stand_in.missing  # pylint: disable=pointless-statement
  assert bench.default_config(force_stand_in=True).to_dict() == ref


def test_input_harness_on_the_tiny_synthetic_config(synthetic_data_dir, capsys):
  bench = _load('input_throughput')
  rc = bench.main(['--config', os.path.join(ROOT, 'configs', 'synthetic.py:tiny'),
                   '--set', f'data.data_dir={synthetic_data_dir}', '--batches', '3',
                   '--warmup', '1', '--num-workers', '1'])
  assert rc == 0
  out = capsys.readouterr().out
  r = json.loads(out.split('RESULT ', 1)[1])
  assert r['batch_size'] == 2 and r['images_per_s'] > 0
  assert r['shapes'] == {'lr': [2, 32, 32, 3], 'hr': [2, 64, 64, 3], 'mask': [2, 64, 64],
                         'fov': [2, 64, 64]}
  assert bench.main(['--config', 'configs/synthetic.py:tiny', '--set', 'data.nope=1']) == 2
  assert "'nope' is not a config key" in capsys.readouterr().err


@pytest.mark.parametrize('k, stride, dilation', [(3, 1, 1), (1, 1, 1), (5, 1, 1), (3, 2, 1),
                                                 (3, 1, 2)])
def test_conv_kernel_gradient_by_taps_matches_float64(k, stride, dilation):
  """The CPU weight gradient (k*k pixel-contracting matmuls) against a float64 NumPy sum."""
  from ds2f_jax.models import layers
  rng = np.random.default_rng(k * 10 + stride + dilation)
  x = rng.normal(size=(2, 11, 12, 3)).astype(np.float32)
  kernel = rng.normal(size=(k, k, 3, 4)).astype(np.float32)
  pad = (k - 1) // 2 * dilation
  y, vjp = jax.vjp(lambda x, w: layers.conv2d(x, w, stride, pad, dilation), x, kernel)
  g = rng.normal(size=y.shape).astype(np.float32)
  dx, dk = vjp(jnp.asarray(g))
  xp = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  ho, wo = y.shape[1:3]
  ref_dk = np.zeros((k, k, 3, 4))
  ref_y = np.zeros(y.shape)
  for i in range(k):
    for j in range(k):
      tap = xp[:, i * dilation:i * dilation + stride * (ho - 1) + 1:stride,
               j * dilation:j * dilation + stride * (wo - 1) + 1:stride]
      ref_dk[i, j] = np.einsum('nhwc,nhwo->co', tap, g)
      ref_y += np.einsum('nhwc,co->nhwo', tap, kernel[i, j].astype(np.float64))
  np.testing.assert_allclose(np.asarray(y), ref_y, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(dk), ref_dk, rtol=1e-4, atol=1e-4)
  ref_dx = jax.vjp(lambda x: jax.lax.conv_general_dilated(
      x, kernel, (stride, stride), ((pad, pad), (pad, pad)), rhs_dilation=(dilation, dilation),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC')), x)[1](jnp.asarray(g))[0]
  np.testing.assert_allclose(np.asarray(dx), np.asarray(ref_dx), rtol=1e-5, atol=1e-5)
  # bfloat16 operands: the pixel sum runs in float32, so only the final rounding is lost.
  dk16 = jax.vjp(lambda w: layers.conv2d(jnp.asarray(x, jnp.bfloat16), w, stride, pad, dilation),
                 jnp.asarray(kernel, jnp.bfloat16))[1](jnp.asarray(g, jnp.bfloat16))[0]
  assert dk16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(dk16, np.float64), ref_dk,
                             rtol=0.05, atol=0.02 * np.abs(ref_dk).max())


def _random_batch(cfg, seed, batch_size=2):
  rng = np.random.default_rng(seed)
  (hi, wi), (ho, wo) = imaging.io_sizes(cfg.data.hr_size, cfg.model.upscale, cfg.model.variant)
  h, w = cfg.data.hr_size
  return {'lr': rng.uniform(-1, 1, (batch_size, hi, wi, 3)).astype(np.float32),
          'hr': rng.uniform(-1, 1, (batch_size, h, w, 3)).astype(np.float32),
          'mask': (rng.uniform(size=(batch_size, ho, wo)) < 0.1).astype(np.int32)}


def _seg_only(cfg):
  """The LR-only variant: the same encoder/decoder blocks and train step in under half of
  DS2F's graph (tiny config: 20k against 46k HLO lines, and 0.43x the compile time)."""
  cfg = cfg.copy_and_resolve_references()
  cfg.model.variant = 'seg_only'
  return cfg


@pytest.mark.slow
def test_remat_recomputes_but_changes_nothing(tiny_config):
  """config.remat wraps the UNet blocks in jax.checkpoint: same loss and gradients."""
  from ds2f_jax import losses
  base = _seg_only(tiny_config)
  batch = _random_batch(base, 0)
  results = {}
  for remat in (False, True):
    cfg = base.copy_and_resolve_references()
    cfg.remat = remat
    model = train.create_model(cfg)
    variables = jax.jit(lambda k, m=model: m.init(k, jnp.asarray(batch['lr']), train=True))(
        jax.random.key(0, impl='rbg'))

    def loss(params, model=model, variables=variables, cfg=cfg):
      out, _ = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                           batch['lr'], train=True, mutable=['batch_stats'])
      return losses.total_loss(out, batch, cfg.loss, cfg.model.num_classes)[0]

    grad_fn = jax.value_and_grad(loss)
    results[remat] = jax.jit(grad_fn)(variables['params'])
    results[remat, 'prims'] = {e.primitive.name for e in jaxpr_walk.eqns(
        jax.make_jaxpr(grad_fn)(variables['params']).jaxpr)}
  remat_names = {'remat2', 'checkpoint'}  # jax.checkpoint's primitive, by JAX version.
  assert remat_names & results[True, 'prims'] and not remat_names & results[False, 'prims']
  (l0, g0), (l1, g1) = results[False], results[True]
  np.testing.assert_allclose(float(l1), float(l0), rtol=1e-6)
  for a, b in zip(jax.tree_util.tree_leaves(g0), jax.tree_util.tree_leaves(g1)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_grad_accumulation_applies_the_mean_gradient_every_k_steps(tiny_config):
  """grad_accum_steps=2: the first micro-step leaves the weights alone; the second applies
  the optimiser (poly schedule counted in updates) to the mean of both gradients."""
  from ds2f_jax import losses
  cfg = _seg_only(tiny_config)
  cfg.grad_accum_steps = 2
  cfg.num_train_steps = 8  # 4 optimiser updates.
  mesh = sharding.create_mesh()
  model, tx = train.create_model(cfg), train.create_optimizer(cfg)
  state = train.init_state(cfg, model, tx, mesh)
  params0 = jax.device_get(state.params)
  stats0 = jax.device_get(state.batch_stats)
  step = train.make_train_step(cfg, model, tx, mesh)
  batches = [_random_batch(cfg, s) for s in (1, 2)]
  lrs = []
  for i, b in enumerate(batches):
    state, scalars = step(state, sharding.put_batch(b, mesh))
    lrs.append(float(scalars['lr']))
    if i == 0:  # A micro-step: gradients accumulated, weights untouched.
      jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(state.params),
                             params0)
  schedule = train.lr_schedule(cfg)
  assert lrs == [float(schedule(0))] * 2 and float(schedule(1)) < lrs[0]

  def loss(params, b):  # BN in train mode normalises with batch statistics: stats0 is unused.
    out, _ = model.apply({'params': params, 'batch_stats': stats0}, b['lr'], train=True,
                         mutable=['batch_stats'])
    return losses.total_loss(out, b, cfg.loss, cfg.model.num_classes)[0]

  grads = [jax.jit(jax.grad(loss))(params0, b) for b in batches]
  mean = jax.tree_util.tree_map(lambda a, b: (a + b) / 2, *grads)
  o = cfg.optim
  plain = optax.chain(optax.add_decayed_weights(o.weight_decay),
                      optax.sgd(schedule, momentum=o.momentum, nesterov=True))
  updates, _ = plain.update(mean, plain.init(params0), params0)
  want = optax.apply_updates(params0, updates)
  got = jax.device_get(state.params)
  for a, b in zip(jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(got)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(params0),
                                                      jax.tree_util.tree_leaves(got)))


def test_conv_backward_costs_two_forwards_in_the_flop_count():
  """layers.conv2d's VJP traces no dead forward and counts one kernel-gradient branch, so the
  harness's TFLOP/s stay honest: forward + input gradient + kernel gradient = 3 forwards."""
  from ds2f_jax import flops
  from ds2f_jax.models import layers
  x, k = jnp.ones((2, 9, 10, 4)), jnp.ones((3, 3, 4, 5))
  f = lambda x, k: layers.conv2d(x, k, 1, 1, 1).sum()
  fwd = flops.conv_matmul_flops(f, x, k)
  assert fwd == 2 * 2 * 9 * 10 * 5 * 9 * 4
  assert flops.conv_matmul_flops(jax.grad(f, argnums=(0, 1)), x, k) == 3 * fwd
