"""IDRiD lesion segmentation dataset."""

from datasets.idrid.idrid_dataset_builder import Builder
