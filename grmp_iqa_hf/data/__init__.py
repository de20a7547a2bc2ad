"""Data: IQA dataset loaders, train/test splits, and the synthetic distortion engine."""

from .datasets import (
    SUPPORTED_FORMATS, DatasetMetadataError, MetadataProblem, image_paths, load_iqa_dataset, read_iqa_info,
)
from .distortions import DISTORTION_GROUPS, DISTORTION_PARAMS, DISTORTIONS, NUM_LEVELS, distort
from .splits import SPLIT_PARTS, Split, load_splits, make_splits, save_splits, splits_from_columns, splits_to_columns
from .registry import DATASET_REGISTRY, IQADatasetFacts, dataset_facts, list_datasets, minmax_scale, normalize_mos
from .synthetic import build_synthetic_dataset, iter_distortion_tasks, load_pristine_images

__all__ = [
    "load_iqa_dataset", "read_iqa_info", "image_paths", "DatasetMetadataError", "MetadataProblem", "SUPPORTED_FORMATS",
    "DATASET_REGISTRY", "IQADatasetFacts", "dataset_facts", "list_datasets", "minmax_scale", "normalize_mos",
    "DISTORTIONS", "DISTORTION_GROUPS", "DISTORTION_PARAMS", "NUM_LEVELS", "distort",
    "SPLIT_PARTS", "Split", "make_splits", "save_splits", "load_splits", "splits_to_columns", "splits_from_columns",
    "build_synthetic_dataset", "iter_distortion_tasks", "load_pristine_images",
]
