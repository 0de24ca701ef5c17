"""STARE retinal vessel dataset."""

from ds2f_jax.datasets.stare.stare_dataset_builder import Builder
