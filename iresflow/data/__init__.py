"""Datasets (offline, TFDS, 2-D toys), dequantisation/logit transforms, and batching."""

from iresflow.data.images import (IMAGE_DATASETS, DatasetNotFoundError, ImageDataset,
                                  load_image_dataset)
from iresflow.data.pipeline import BatchSampler, augment_crop_flip
from iresflow.data.toy import TOY_DENSITIES, sample_toy
from iresflow.data.transforms import bits_per_dim, dequantize, inverse_logit_transform, logit_transform

__all__ = [
    "BatchSampler", "DatasetNotFoundError", "IMAGE_DATASETS", "ImageDataset", "TOY_DENSITIES",
    "augment_crop_flip", "bits_per_dim", "dequantize", "inverse_logit_transform", "load_image_dataset",
    "logit_transform", "sample_toy",
]
