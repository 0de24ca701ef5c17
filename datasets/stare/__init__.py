"""STARE retinal vessel dataset."""

from datasets.stare.stare_dataset_builder import Builder
