"""REFUGE optic disc and cup dataset."""

from datasets.refuge.refuge_dataset_builder import Builder
