"""Runs `main.py` as a subprocess and stops it at named fault points (ds2f_jax/fault_points.py).

The trainer pauses at a point and waits; the harness then inspects the
workdir, sends kill -9 or SIGTERM, and/or lets it go on. Every process
started here is killed (by its pid) when the test ends.
"""

import os
import signal
import subprocess
import sys
import time

from ds2f_jax import fault_points

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main_env(**extra):
  """The environment of a main.py subprocess: the tests' XLA compile cache, quiet TF."""
  env = dict(os.environ)
  cache = env.get('DS2F_TEST_XLA_CACHE')
  if cache:
    env['JAX_COMPILATION_CACHE_DIR'] = os.path.abspath(cache)
    env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0.5'
  env.pop(fault_points.PAUSE_ENV, None)
  env.update(extra)
  return env


def main_args(workdir, config_args):
  return [sys.executable, os.path.join(ROOT, 'main.py'), '--config', 'configs/synthetic.py:tiny',
          '--workdir', str(workdir), *config_args]


def run_main(workdir, config_args, timeout=300):
  """main.py to completion: (returncode, stderr)."""
  proc = subprocess.run(main_args(workdir, config_args), capture_output=True, text=True,
                        timeout=timeout, cwd=ROOT, env=main_env())
  return proc.returncode, proc.stderr


def wait_for(predicate, timeout=120.0, what='condition'):
  deadline = time.monotonic() + timeout
  while not predicate():
    if time.monotonic() > deadline:
      raise TimeoutError(f'timed out waiting for {what}')
    time.sleep(0.05)


class Trainer:
  """One main.py trainer subprocess; `pause` lists 'point:step' fault points."""

  _started = []

  def __init__(self, workdir, config_args, fault_dir, pause=()):
    os.makedirs(fault_dir, exist_ok=True)
    self.fault_dir = str(fault_dir)
    self.log_path = os.path.join(self.fault_dir, f'trainer_{len(Trainer._started)}.log')
    env = main_env(**{fault_points.PAUSE_ENV: ','.join(pause),
                      fault_points.DIR_ENV: self.fault_dir})
    with open(self.log_path, 'w') as log:
      self.proc = subprocess.Popen(main_args(workdir, config_args), stdout=log,
                                   stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    Trainer._started.append(self)

  @property
  def pid(self):
    return self.proc.pid

  def log(self):
    with open(self.log_path, encoding='utf-8', errors='replace') as f:
      return f.read()

  def wait_paused(self, point, step, timeout=300.0):
    marker = os.path.join(self.fault_dir, f'paused.{point}.{step}')
    deadline = time.monotonic() + timeout
    while not os.path.exists(marker):
      if self.proc.poll() is not None:
        raise AssertionError(f'trainer exited ({self.proc.returncode}) before {point}:{step}:\n'
                             f'{self.log()[-3000:]}')
      if time.monotonic() > deadline:
        raise TimeoutError(f'trainer never reached {point}:{step}:\n{self.log()[-3000:]}')
      time.sleep(0.05)

  def resume(self, point, step):
    open(os.path.join(self.fault_dir, f'resume.{point}.{step}'), 'w').close()

  def signal(self, sig):
    self.proc.send_signal(sig)

  def wait(self, timeout=300.0):
    return self.proc.wait(timeout=timeout)

  def kill9(self):
    self.proc.send_signal(signal.SIGKILL)
    return self.proc.wait(timeout=60)

  @classmethod
  def kill_all(cls):
    for t in cls._started:
      if t.proc.poll() is None:
        t.proc.kill()
        t.proc.wait(timeout=60)
    cls._started.clear()
