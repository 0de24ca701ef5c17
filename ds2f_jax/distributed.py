"""Multi-process runs (TPU pod slices, multi-node GPUs) on JAX's distributed runtime.

Every process runs the same `main.py`; `initialize_from_env()` must come before
any JAX computation. It starts `jax.distributed` only when the environment
describes a job of several processes, so single-host runs (one GPU, eight
GPUs, a TPU VM, Colab) are untouched:

  DS2F_DISTRIBUTED=0            never (single host, even under SLURM)
  DS2F_DISTRIBUTED=1            always, JAX detecting the cluster (TPU pod slices:
                                GCE TPU VMs describe the slice in their metadata)
  JAX_COORDINATOR_ADDRESS=h:p   explicit: with JAX_NUM_PROCESSES and JAX_PROCESS_ID
  SLURM (srun, > 1 task)        JAX reads the SLURM_* variables
  Open MPI (mpirun, > 1 rank)   JAX reads the OMPI_* variables
  TPU_WORKER_HOSTNAMES=a,b,...  multi-host TPU on GKE

After it, the mesh spans the devices of all processes; each process reads only
its block of every global batch (`input_pipeline`), and process 0 alone writes
the reports; orbax checkpoints are written by all processes together into a
workdir they must all see (a shared filesystem or a GCS bucket).
"""

from __future__ import annotations

from collections.abc import Mapping
import contextlib
import os
import re
import shutil

from absl import logging

# What JAX's SLURM detection reads (set for tasks started by srun).
_SLURM_VARS = ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_NTASKS', 'SLURM_PROCID', 'SLURM_LOCALID')


def _int(env: Mapping[str, str], key: str, default: int = 1) -> int:
  try:
    return int(env.get(key, default))
  except ValueError:
    raise ValueError(f'environment variable {key}={env[key]!r} must be an integer') from None


def initialize_args(env: Mapping[str, str]) -> dict | None:
  """Keyword arguments for `jax.distributed.initialize`, or None for a single process."""
  mode = env.get('DS2F_DISTRIBUTED', '').strip().lower()
  if mode not in ('', 'auto', '0', '1'):
    raise ValueError(f'DS2F_DISTRIBUTED={env["DS2F_DISTRIBUTED"]!r} must be 0, 1 or auto')
  if mode == '0':
    return None
  if env.get('JAX_COORDINATOR_ADDRESS'):
    args = {'coordinator_address': env['JAX_COORDINATOR_ADDRESS']}
    for key, arg in (('JAX_NUM_PROCESSES', 'num_processes'), ('JAX_PROCESS_ID', 'process_id')):
      if key in env:
        args[arg] = _int(env, key)
    if args.get('num_processes') == 1 and mode != '1':
      return None
    return args
  if mode == '1':
    return {}
  if all(k in env for k in _SLURM_VARS) and _int(env, 'SLURM_NTASKS') > 1:
    return {}
  if 'OMPI_MCA_orte_hnp_uri' in env and _int(env, 'OMPI_COMM_WORLD_SIZE') > 1:
    return {}
  if len([h for h in env.get('TPU_WORKER_HOSTNAMES', '').split(',') if h.strip()]) > 1:
    return {}
  return None


def initialize_from_env(env: Mapping[str, str] | None = None) -> bool:
  """Starts jax.distributed when `env` (default os.environ) asks for it; True if it did.

  Processes other than 0 then log warnings only, so a job prints one log.
  """
  args = initialize_args(os.environ if env is None else env)
  if args is None:
    return False
  import jax  # pylint: disable=g-import-not-at-top
  jax.distributed.initialize(**args)
  logging.info('jax.distributed: process %d of %d, %d local / %d global devices.',
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)
  return True


def _multi_process() -> bool:
  # Without jax.distributed there is one process; asking JAX would start its backend.
  import jax  # pylint: disable=g-import-not-at-top
  return jax.distributed.is_initialized() and jax.process_count() > 1


def barrier(name: str) -> None:
  """Waits until every process gets here (no-op for one process)."""
  if _multi_process():
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def prepare_dataset(data_cfg):
  """input_pipeline.prepare on process 0 first, then on the others.

  With a shared data_dir the others find the dataset built; with per-host
  directories (prepared beforehand) each opens its own. Never two processes
  building into one directory at once.
  """
  import jax  # pylint: disable=g-import-not-at-top
  if not _multi_process():
    return _prepare_locked(data_cfg)
  builder = None
  if jax.process_index() == 0:
    builder = _prepare_locked(data_cfg)
  barrier('ds2f_prepare_dataset')
  if builder is None:
    builder = _prepare_locked(data_cfg)
  return builder


PREPARE_LOCK = '.{version}.prepare.lock'


def _prepare_locked(data_cfg):
  """Builds the dataset (if needed) holding an flock next to its version directory, and
  first deletes the `incomplete.*` directories of that version that a killed build left.

  TFDS builds into `<config dir>/incomplete.<6 random chars>_<version>` and renames it
  when done; a build killed by kill -9 leaves it behind for good. Every build started
  here holds the lock, so one seen while holding it is no live process's work.
  (Not on remote filesystems such as gs://, which have no flock: prepared as before.)
  """
  from ds2f_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  builder = input_pipeline.get_builder(data_cfg)
  version_dir = os.fspath(builder.data_dir).rstrip('/')
  if builder.is_prepared() or '://' in version_dir:
    return input_pipeline.prepare(data_cfg)
  parent, version = os.path.split(version_dir)
  os.makedirs(parent, exist_ok=True)
  with _flock(os.path.join(parent, PREPARE_LOCK.format(version=version))) as locked:
    for name in sorted(os.listdir(parent)) if locked else ():
      if re.fullmatch(rf'incomplete\.[A-Z0-9]{{6}}_{re.escape(version)}', name):
        path = os.path.join(parent, name)
        shutil.rmtree(path, ignore_errors=True)
        logging.warning('Deleted %s, left by a dataset build that was killed.', path)
    return input_pipeline.prepare(data_cfg)


@contextlib.contextmanager
def _flock(path: str):
  """An exclusive flock on `path`, waiting (with a log line) while another process holds
  it; yields False where the filesystem has no flock (nothing is then cleaned)."""
  import fcntl  # pylint: disable=g-import-not-at-top
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      locked = True
    except BlockingIOError:
      logging.info('Waiting for another process preparing the dataset (%s).', path)
      fcntl.flock(fd, fcntl.LOCK_EX)
      locked = True
    except OSError:  # ENOLCK, EOPNOTSUPP: no flock on this filesystem.
      locked = False
    yield locked
  finally:
    os.close(fd)
