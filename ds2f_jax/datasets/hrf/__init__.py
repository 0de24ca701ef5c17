"""HRF (High-Resolution Fundus) retinal vessel dataset."""

from ds2f_jax.datasets.hrf.hrf_dataset_builder import Builder
