"""The `:cpu` argument of the vessel configs builds a valid, consistent recipe (no training)."""

import importlib

import pytest

from configs import cpu_recipe
from ds2f_jax import imaging, input_pipeline, train
from ds2f_jax.models import registry

NAMES = ('chase_db1', 'drive', 'hrf', 'stare')
# What the recipe may change against the paper-scale config; nothing else may differ.
CHANGED = {'model.width', 'data.crop_size', 'batch_size', 'num_train_steps',
           'optim.learning_rate', 'optim.warmup_steps', 'log_every_steps',
           'eval_every_steps', 'checkpoint_every_steps', 'eval.batch_size'}


def _flat(d, prefix=''):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = tuple(v) if isinstance(v, list) else v
  return out


@pytest.mark.parametrize('name', NAMES)
def test_cpu_recipe_is_valid_and_sizes_divide(name):
  c = importlib.import_module(f'configs.{name}').get_config('cpu')
  train.validate_config(c)
  r = c.model.upscale
  hr = imaging.check_sizes(c.data.hr_size, r)
  crop = input_pipeline._check_crop(c.data.crop_size, hr, r)  # pylint: disable=protected-access
  assert crop == cpu_recipe.CROP
  registry.check_input_size(c.model, (crop[0] // r, crop[1] // r))
  assert c.num_train_steps % c.eval_every_steps == 0
  assert c.num_train_steps // c.eval_every_steps == cpu_recipe.EVALS
  assert c.eval_every_steps % c.log_every_steps == 0
  assert 0 < c.optim.warmup_steps < c.num_train_steps
  assert c.batch_size >= 2 and c.eval.batch_size >= 1
  assert (c.model.name, c.model.variant, c.model.upscale) == ('ds2f_unet', 'ds2f', 2)


@pytest.mark.parametrize('name', NAMES)
def test_cpu_recipe_changes_only_the_documented_keys(name):
  module = importlib.import_module(f'configs.{name}')
  paper = _flat(module.get_config().to_dict())
  cpu = _flat(module.get_config('cpu').to_dict())
  assert set(paper) == set(cpu)
  assert {k for k in paper if paper[k] != cpu[k]} <= CHANGED
  assert (cpu['model.width'], cpu['batch_size'], cpu['num_train_steps']) == (
      cpu_recipe.WIDTH, cpu_recipe.BATCH, cpu_recipe.STEPS)
  assert cpu['optim.learning_rate'] == cpu_recipe.LEARNING_RATE
  assert cpu['data.hr_size'] == paper['data.hr_size']  # Evaluated at the dataset's size.


def test_cpu_recipe_is_the_same_for_every_dataset():
  recipes = []
  for name in NAMES:
    cpu = _flat(importlib.import_module(f'configs.{name}').get_config('cpu').to_dict())
    recipes.append({k: cpu[k] for k in CHANGED})
  assert all(r == recipes[0] for r in recipes)


@pytest.mark.parametrize('name', NAMES)
def test_unknown_argument_names_the_file(name):
  module = importlib.import_module(f'configs.{name}')
  with pytest.raises(ValueError, match=rf'configs/{name}\.py: unknown argument \'gpu\''):
    module.get_config('gpu')
