"""k-NN accuracy during pre-training, on fixed class-balanced subsets of train and test."""
from __future__ import annotations

import numpy as np
import torch


@torch.inference_mode()
def _embed(backbone, dataset, indices, cfg, device) -> tuple[torch.Tensor, torch.Tensor]:
    from torch.utils.data import DataLoader, Subset

    from folk.data import collate_skip_none
    from folk.models import pooled_features

    loader = DataLoader(Subset(dataset, indices), batch_size=cfg["eval"]["batch_size"],
                        num_workers=cfg["data"]["num_workers"], collate_fn=collate_skip_none)
    feats, labels = [], []
    for images, y, _ in loader:
        if len(y) == 0:
            continue
        tokens = backbone.forward_features(images.to(device))
        feats.append(pooled_features(backbone, tokens).float().cpu())
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def knn_monitor(cfg: dict, backbone, device) -> dict:
    from folk.data import build_dataset
    from folk.data.subsets import class_balanced_indices
    from folk.data.transforms import eval_transform
    from folk.evals.knn import knn_accuracy

    p, seed = cfg["pretrain"], cfg["experiment"]["seed"]
    n_classes = cfg["data"]["num_classes"]
    was_training = backbone.training
    backbone.eval()
    parts = {}
    for split, count in (("train", p["knn_train_images"]), ("test", p["knn_test_images"])):
        dataset = build_dataset(cfg, split, transform=eval_transform(cfg))
        smallest = int(np.bincount(np.asarray(dataset.targets), minlength=n_classes).min())
        per_class = max(1, min(count // n_classes, smallest))
        idx = class_balanced_indices(dataset.targets, per_class=per_class, seed=seed)
        parts[split] = _embed(backbone, dataset, idx.tolist(), cfg, device)
    backbone.train(was_training)
    k = 20
    acc = knn_accuracy(parts["train"][0], parts["train"][1], parts["test"][0], parts["test"][1],
                       k=k, T=cfg["eval"]["knn"]["temperature"], num_classes=n_classes)
    return {"knn_top1": round(float(acc), 3), "k": k}
