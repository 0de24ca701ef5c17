"""DRIVE retinal vessel dataset."""

from ds2f_jax.datasets.drive.drive_dataset_builder import Builder
