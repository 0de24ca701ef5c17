"""DRIVE retinal vessel dataset."""

from datasets.drive.drive_dataset_builder import Builder
