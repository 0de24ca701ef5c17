r"""Named ablation presets: preset name -> config overrides (dotted keys).

Each preset names the model variant it trains, so a row of the ablation table
means the same thing whatever the base config's `model.variant` is. Any other
key keeps the base config's value (and its --config.key=value overrides).

  python -m ds2f_jax.ablate --config configs/drive.py --workdir W \
      --variants seg_only,seg_hr,dual_stream,ds2f_after,ds2f
"""

import ml_collections

PRESETS = {
    # The model variants (docs/method.md §Variants; D14 for the two baselines).
    'seg_only': {'model.variant': 'seg_only'},  # Segmentation network at LR, mask at LR.
    'seg_hr': {'model.variant': 'seg_hr'},  # The same at full resolution (the costly one).
    'dual_stream': {'model.variant': 'dual_stream'},  # SR stream + MSE, no SFEM, no proxy.
    'ds2f_after': {'model.variant': 'ds2f_after'},  # SFEM on the output maps (before=False).
    'ds2f': {'model.variant': 'ds2f'},  # The full method.
    # RCAB with SE-style global pooling instead of the per-pixel gate (docs/method.md D1).
    'rcab_global_pool': {'model.variant': 'ds2f', 'model.rcab_global_pool': True},
    # Loss weights of the full method (docs/method.md D8): one proxy term, both, or the SR MSE off.
    'no_proxy_ssim': {'model.variant': 'ds2f', 'loss.ssim_weight': 0.0},
    'no_proxy_rmi': {'model.variant': 'ds2f', 'loss.rmi_weight': 0.0},
    'no_proxy': {'model.variant': 'ds2f', 'loss.ssim_weight': 0.0, 'loss.rmi_weight': 0.0},
    'no_sr_mse': {'model.variant': 'ds2f', 'loss.mse_weight': 0.0},
}

# What `--variants` runs when not given: the paper's architecture ablation.
DEFAULT_VARIANTS = ('seg_only', 'seg_hr', 'dual_stream', 'ds2f_after', 'ds2f')


def overrides(name: str) -> dict:
  """The overrides of preset `name`; a one-line error names unknown presets."""
  if name not in PRESETS:
    raise ValueError(f'unknown ablation preset {name!r}; choose from {", ".join(PRESETS)}')
  return dict(PRESETS[name])


def apply(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """A copy of `config` with preset `name` applied (config itself is unchanged)."""
  out = config.copy_and_resolve_references()
  for key, value in overrides(name).items():
    *parents, leaf = key.split('.')
    node = out
    for part in parents:
      node = node[part]
    if leaf not in node:
      raise ValueError(f'ablation preset {name!r} sets {key}, which the config does not have')
    node[leaf] = value
  return out
