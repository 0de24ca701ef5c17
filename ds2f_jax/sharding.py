"""The device mesh and the shardings of the data-parallel step.

Parameters are replicated; the batch is split over every device of every process
along the 'data' axis. BatchNorm statistics under `jax.jit` are then global-batch
statistics without any explicit collective.
"""

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P


def create_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D ('data',) mesh with Auto axes (new JAX defaults to Explicit ones)."""
  devices = jax.devices() if devices is None else devices
  return jax.make_mesh((len(devices),), ('data',), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def check_batch_size(global_batch: int, mesh, key: str = 'batch_size') -> None:
  n = mesh.devices.size
  if global_batch % n:
    raise ValueError(f'{key}={global_batch} is not divisible by the {n} devices of the mesh')
  if global_batch % jax.process_count():
    raise ValueError(f'{key}={global_batch} is not divisible by the {jax.process_count()} '
                     'processes')


def put_batch(batch: dict, mesh) -> dict:
  """Process-local numpy batch -> global arrays sharded over 'data'."""
  sharding = data_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}
