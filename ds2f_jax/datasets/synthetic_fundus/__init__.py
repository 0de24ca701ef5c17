"""synthetic_fundus dataset."""

from .synthetic_fundus_dataset_builder import Builder
