"""benchmarks/accuracy_gpu.sh refuses bad arguments with one error line before any work."""

import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'benchmarks', 'accuracy_gpu.sh')


@pytest.mark.parametrize('args, message', [
    ([], 'error: usage: bash benchmarks/accuracy_gpu.sh DATASET[:ARG] DATA_DIR'),
    (['nope', '/'], "error: DATASET 'nope': no configs/nope.py"),
    (['drive:cpu', '/no/such/dir'], "error: DATA_DIR '/no/such/dir' is not a folder"),
])
def test_bad_arguments(args, message, tmp_path):
  env = dict(os.environ, OUT=str(tmp_path / 'out'), WORKDIR=str(tmp_path / 'w'))
  done = subprocess.run(['bash', SCRIPT, *args], capture_output=True, text=True, check=False,
                        env=env)
  assert done.returncode == 2
  assert done.stderr.strip().startswith(message)
  assert not (tmp_path / 'w').exists()


def test_missing_modules_are_named(tmp_path):
  fake_py = tmp_path / 'py'  # A Python that sees no site-packages.
  fake_py.write_text('#!/bin/sh\nexec python3 -S -I "$@"\n')
  fake_py.chmod(0o755)
  env = dict(os.environ, OUT=str(tmp_path / 'out'), WORKDIR=str(tmp_path / 'w'),
             PY=str(fake_py))
  done = subprocess.run(['bash', SCRIPT, 'drive', str(tmp_path)], capture_output=True,
                        text=True, check=False, env=env)
  assert done.returncode == 2
  assert done.stderr.strip().startswith('error: python modules missing on this machine: jax')
