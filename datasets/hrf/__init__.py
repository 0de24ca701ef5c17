"""HRF (High-Resolution Fundus) retinal vessel dataset."""

from datasets.hrf.hrf_dataset_builder import Builder
