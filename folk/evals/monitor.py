"""k-NN accuracy during pre-training, on fixed class-balanced subsets of train and test."""

from __future__ import annotations

import numpy as np

from folk.data import build_dataset
from folk.data.subsets import class_balanced_indices
from folk.evals.features import extract_features
from folk.evals.knn import knn_accuracy


def knn_monitor(cfg: dict, backbone) -> dict:
    """Weighted 20-NN top-1 of ``backbone``'s features, extracted the way ``folk eval knn``
    extracts them (uncached: the weights change between calls)."""
    p, seed = cfg["pretrain"], cfg["experiment"]["seed"]
    n_classes = cfg["data"]["num_classes"]
    parts = {}
    for split, count in (("train", p["knn_train_images"]), ("test", p["knn_test_images"])):
        targets = np.asarray(build_dataset(cfg, split).targets)
        smallest = int(np.bincount(targets, minlength=n_classes).min())
        per_class = max(1, min(count // n_classes, smallest))
        idx = class_balanced_indices(targets, per_class=per_class, seed=seed)
        parts[split] = extract_features(backbone, cfg, split, None, indices=idx.tolist())
    k = 20
    acc = knn_accuracy(
        parts["train"][0],
        parts["train"][1],
        parts["test"][0],
        parts["test"][1],
        k=k,
        T=cfg["eval"]["knn"]["temperature"],
        num_classes=n_classes,
    )
    return {"knn_top1": round(float(acc), 3), "k": k}
