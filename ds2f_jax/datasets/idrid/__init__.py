"""IDRiD lesion segmentation dataset."""

from ds2f_jax.datasets.idrid.idrid_dataset_builder import Builder
