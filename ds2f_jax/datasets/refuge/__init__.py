"""REFUGE optic disc and cup dataset."""

from ds2f_jax.datasets.refuge.refuge_dataset_builder import Builder
