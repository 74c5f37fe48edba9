"""Datasets, transforms, label subsets and manifests.

Public names are imported on first use, so that importing one submodule (``folk.data.subsets``
needs numpy only) does not load the others, and torch with them.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "build_dataset": "folk.data.classification",
    "build_base_dataset": "folk.data.classification",
    "collate_skip_none": "folk.data.classification",
    "FashionMNIST": "folk.data.classification",
    "ImageFolderDataset": "folk.data.classification",
    "LabelledSubset": "folk.data.classification",
    "PretrainViews": "folk.data.transforms",
    "eval_transform": "folk.data.transforms",
    "train_classifier_transform": "folk.data.transforms",
    "normalize": "folk.data.transforms",
    "class_balanced_indices": "folk.data.subsets",
    "split_train_val": "folk.data.subsets",
    "read_file_list": "folk.data.subsets",
    "write_file_list": "folk.data.subsets",
    "fewshot_list_path": "folk.data.subsets",
    "write_manifest": "folk.data.manifest",
    "read_manifest": "folk.data.manifest",
    "check_layout": "folk.data.manifest",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'folk.data' has no attribute {name!r}")
