"""CHASE_DB1 retinal vessel dataset."""

from ds2f_jax.datasets.chase_db1.chase_db1_dataset_builder import Builder
