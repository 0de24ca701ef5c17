"""Multi-process runs: when jax.distributed starts, and two real CPU processes.

The two-process test runs every multi-process piece of a training run except
the train step (whose compile alone would take minutes for two processes on
two cores): dataset preparation, the per-process data split assembled into
global batches, evaluation over the split, orbax checkpoints written together
and read back by one process, and reports written by process 0 only.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from ds2f_jax import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SLURM = {'SLURM_JOB_ID': '7', 'SLURM_STEP_NODELIST': 'n[1-2]', 'SLURM_PROCID': '1',
          'SLURM_LOCALID': '0'}


@pytest.mark.parametrize('env, expected', [
    ({}, None),
    ({'DS2F_DISTRIBUTED': '1'}, {}),
    ({'DS2F_DISTRIBUTED': 'auto'}, None),
    ({'JAX_COORDINATOR_ADDRESS': 'h:1234', 'JAX_NUM_PROCESSES': '4', 'JAX_PROCESS_ID': '2'},
     {'coordinator_address': 'h:1234', 'num_processes': 4, 'process_id': 2}),
    ({'JAX_COORDINATOR_ADDRESS': 'h:1234'}, {'coordinator_address': 'h:1234'}),
    ({'JAX_COORDINATOR_ADDRESS': 'h:1234', 'JAX_NUM_PROCESSES': '1', 'JAX_PROCESS_ID': '0'}, None),
    ({'JAX_COORDINATOR_ADDRESS': 'h:1234', 'DS2F_DISTRIBUTED': '0'}, None),
    ({**_SLURM, 'SLURM_NTASKS': '2'}, {}),
    ({**_SLURM, 'SLURM_NTASKS': '1'}, None),  # One task: a single-host job.
    ({**_SLURM, 'SLURM_NTASKS': '2', 'DS2F_DISTRIBUTED': '0'}, None),
    ({'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '2'}, None),  # sbatch script outside srun.
    ({'OMPI_MCA_orte_hnp_uri': 'x', 'OMPI_COMM_WORLD_SIZE': '2'}, {}),
    ({'TPU_WORKER_HOSTNAMES': 'a,b'}, {}),
    ({'TPU_WORKER_HOSTNAMES': 'a'}, None),  # A single-host TPU VM.
])
def test_when_jax_distributed_starts(env, expected):
  assert distributed.initialize_args(env) == expected
  if expected is None:
    assert distributed.initialize_from_env(env) is False


@pytest.mark.parametrize('env, message', [
    ({'DS2F_DISTRIBUTED': 'yes'}, "DS2F_DISTRIBUTED='yes' must be 0, 1 or auto"),
    ({'JAX_COORDINATOR_ADDRESS': 'h:1', 'JAX_NUM_PROCESSES': 'two'},
     "JAX_NUM_PROCESSES='two' must be an integer"),
])
def test_bad_environment_is_named(env, message):
  with pytest.raises(ValueError, match=message):
    distributed.initialize_args(env)


_PROCESS = textwrap.dedent('''
    import json, sys
    sys.path.insert(0, {root!r})
    from ds2f_jax import distributed
    assert distributed.initialize_from_env()  # From JAX_COORDINATOR_ADDRESS & co.
    import jax, jax.numpy as jnp, numpy as np
    from jax.experimental import multihost_utils
    from configs import synthetic
    from ds2f_jax import checkpointing, confusion, input_pipeline, reporting, sharding, train
    cfg = synthetic.get_config('tiny')
    cfg.data.data_dir, cfg.batch_size, cfg.eval.batch_size = {data_dir!r}, 4, 4
    pi, out = jax.process_index(), {{}}
    distributed.prepare_dataset(cfg.data)  # A fresh data_dir: process 0 builds, then the other.

    mesh = sharding.create_mesh()
    out['devices'] = [mesh.devices.size, jax.local_device_count()]
    batch = next(input_pipeline.train_iterator(cfg, 0, process_index=pi, process_count=2))
    glob = sharding.put_batch({{'lr': batch['lr'], 'mask': batch['mask']}}, mesh)
    out['global_lr_shape'] = list(glob['lr'].shape)
    gathered = multihost_utils.process_allgather(glob['lr'], tiled=True)  # Collective: all call.
    if pi == 0:
      np.save({lr_file!r}, gathered)

    seen = []
    summarize = confusion.summarize_confusion
    confusion.summarize_confusion = lambda cm, *a, **k: (seen.append(np.asarray(cm)), summarize(cm, *a, **k))[1]
    def labels_vs_labels(state, b):  # Needs no model: counts every valid HR pixel once.
      weights = jnp.broadcast_to(b['valid'][:, None, None], b['mask'].shape)
      return confusion.confusion_matrix(b['mask'], b['mask'], 2, weights=weights)
    rep = sharding.replicated(mesh)
    step = jax.jit(labels_vs_labels, in_shardings=(rep, sharding.data_sharded(mesh)), out_shardings=rep)
    val = train.evaluate(cfg, step, {{}}, mesh, 'validation')
    out['eval_pixels'], out['val_acc'] = int(seen[0].sum()), val['val/acc']

    state = jax.jit(lambda: {{'w': jnp.arange(6.0).reshape(2, 3), 'step': jnp.int32(4)}},
                    out_shardings=rep)()
    mngr = checkpointing.create_manager({workdir!r}, 2)
    checkpointing.save(mngr, 4, state)
    mngr.wait_until_finished()
    back = checkpointing.restore(mngr, 4, state, rep)
    out['restored'] = np.asarray(back['w']).tolist()
    mngr.close()

    writer = reporting.MetricWriter({workdir!r})
    writer.write_scalars(4, {{'process': pi}})
    writer.close()
    distributed.barrier('test_done')
    print('RESULT', json.dumps(out))
''')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_split_data_eval_checkpoints_and_reports(tmp_path):
  data_dir, workdir = str(tmp_path / 'tfds'), str(tmp_path / 'w')
  os.makedirs(workdir)
  lr_file = str(tmp_path / 'global_lr.npy')
  script = _PROCESS.format(root=ROOT, data_dir=data_dir, workdir=workdir, lr_file=lr_file)
  port = _free_port()
  procs = []
  for i in range(2):
    env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f'localhost:{port}', JAX_NUM_PROCESSES='2',
               JAX_PROCESS_ID=str(i), JAX_PLATFORMS='cpu')
    env.pop('XLA_FLAGS', None)
    procs.append(subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env))
  results = []
  for p in procs:
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stderr[-3000:]
    results.append(json.loads(stdout.split('RESULT', 1)[1]))

  for r in results:
    assert r['devices'] == [2, 1]  # One CPU device per process, one mesh over both.
    assert r['global_lr_shape'] == [4, 32, 32, 3]  # Each process fed 2 of the 4 examples.
    assert r['eval_pixels'] == 16 * 64 * 64  # 16 validation images, each counted once.
    assert r['restored'] == [[0, 1, 2], [3, 4, 5]]
  assert results[0]['val_acc'] == results[1]['val_acc'] == 1.0

  # The global batch is the one a single process reads for the same step.
  from configs import synthetic
  from ds2f_jax import checkpointing, input_pipeline, sharding
  cfg = synthetic.get_config('tiny')
  cfg.data.data_dir, cfg.batch_size = data_dir, 4
  single = next(input_pipeline.train_iterator(cfg, 0))
  np.testing.assert_array_equal(np.load(lr_file), single['lr'])

  # Process 0 alone reported; the checkpoint both wrote restores in one process.
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    assert [json.loads(line) for line in f] == [{'step': 4, 'process': 0}]
  mesh = sharding.create_mesh(jax.devices()[:1])
  mngr = checkpointing.create_manager(workdir, 2)
  target = {'w': np.zeros((2, 3), np.float32), 'step': np.int32(0)}
  back = checkpointing.restore(mngr, 4, target, sharding.replicated(mesh))
  mngr.close()
  np.testing.assert_array_equal(np.asarray(back['w']), np.arange(6.0).reshape(2, 3))
  assert int(back['step']) == 4
