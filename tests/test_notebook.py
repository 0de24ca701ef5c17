"""The Colab notebook runs top to bottom on a CPU with the tiny synthetic config."""

import os
import re

import pytest

pytestmark = pytest.mark.slow  # Trains or compiles many programs: the full suite only.

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, 'notebooks', 'ds2f_colab_tpu.ipynb')


def test_notebook_runs_through(synthetic_data_dir, tmp_path, monkeypatch):
  nbformat = pytest.importorskip('nbformat')
  nbclient = pytest.importorskip('nbclient')
  workdir = tmp_path / 'w'
  for key, value in {'DS2F_NOTEBOOK_SMOKE': '1', 'DS2F_DATA_DIR': synthetic_data_dir,
                     'DS2F_WORKDIR': str(workdir), 'DS2F_REPO_DIR': ROOT, 'JAX_PLATFORMS': 'cpu',
                     # The kernel reuses the suite's compiled programs (same tiny model).
                     'JAX_COMPILATION_CACHE_DIR': os.environ['DS2F_TEST_XLA_CACHE'],
                     'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0.5'}.items():
    monkeypatch.setenv(key, value)
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name='python3',
                                   resources={'metadata': {'path': os.path.dirname(NOTEBOOK)}})
  client.execute()  # Raises CellExecutionError, with the cell's traceback, if a cell fails.

  def text(cell):
    return ''.join(o.get('text', '') for o in cell.get('outputs', []) if o.output_type == 'stream')

  code = [c for c in nb.cells if c.cell_type == 'code']
  everything = '\n'.join(text(c) for c in code)
  assert 'smoke=True' in everything and f'repository: {ROOT}' in everything
  assert "'train': 96" in everything  # The prepared synthetic splits.
  assert 'step 2, test:' in everything and 'dice' in everything
  assert "['export_info.json', 'model.jax_exported', 'params', 'params.msgpack']" in everything
  assert everything.count('pixel agreement') == 2
  images = sum(1 for c in code for o in c.get('outputs', []) if 'image/png' in o.get('data', {}))
  # A training example, curves.png, then two served test images with overlays.
  assert images == 4
  assert (workdir / 'export' / 'export_info.json').is_file()
  assert (workdir / 'checkpoints' / '2').is_dir()
  assert (workdir / 'curves.png').is_file()
  # Training progress is shown: a notebook bar (a widget, or tqdm's text on stderr without
  # ipywidgets), naming the run and its steps.
  shown = everything + ''.join(str(o.get('data', {})) for c in code for o in c.get('outputs', []))
  assert re.search(r'train: .*\d/2 ', shown), shown[-3000:]


def test_notebook_installs_no_test_packages_and_mounts_drive():
  nbformat = pytest.importorskip('nbformat')
  nb = nbformat.read(NOTEBOOK, as_version=4)
  source = '\n'.join(c.source for c in nb.cells if c.cell_type == 'code')
  first = [c for c in nb.cells if c.cell_type == 'code'][0].source
  assert "drive.mount('/content/drive')" in first and 'if IN_COLAB' in first
  assert 'REPO_URL is not set' in first
  for package in ('ipykernel', 'nbclient', 'nbformat', 'pytest', 'requirements-test'):
    assert package not in source, package
  with open(os.path.join(ROOT, 'requirements.txt')) as f:
    runtime = f.read()
  for package in ('ipykernel', 'nbclient', 'nbformat', 'pytest'):
    assert package not in runtime, package
