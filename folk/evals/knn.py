"""Weighted k-NN classification on frozen features (DINO's protocol).

Features are L2-normalised; each test sample takes its k most cosine-similar training
samples, each voting for its label with weight exp(similarity / T); the class with the
largest summed vote wins. The top max(k) neighbours are found once and every k of
``eval.knn.k`` reuses them. Test samples are processed in chunks so that the
(chunk x N_train) similarity matrix bounds the memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from folk.errors import ConfigError, DataError
from folk.evals import features
from folk.evals.common import features_cache_dir

DEFAULT_CHUNK = 256


def _votes(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    ks: Sequence[int],
    T: float,
    num_classes: int,
    chunk_size: int = DEFAULT_CHUNK,
) -> Iterator[tuple[int, dict[int, torch.Tensor]]]:
    """Yields (start index, {k: class votes [chunk, num_classes]}) chunk by chunk."""
    if train_feats.shape[0] == 0:
        raise ValueError("k-NN needs at least one training sample")
    if train_feats.shape[1] != test_feats.shape[1]:
        raise ValueError(
            f"feature dimensions differ: train {train_feats.shape[1]}, "
            f"test {test_feats.shape[1]}"
        )
    device = train_feats.device
    train = F.normalize(train_feats.float(), dim=1)
    train_labels = train_labels.to(device)
    max_k = min(max(ks), train.shape[0])
    for start in range(0, test_feats.shape[0], chunk_size):
        test = F.normalize(test_feats[start : start + chunk_size].to(device).float(), dim=1)
        sims, idx = (test @ train.T).topk(max_k, dim=1)  # sorted, most similar first
        weights = (sims / T).exp()
        neighbour_labels = train_labels[idx]
        out = {}
        for k in ks:
            kk = min(k, max_k)
            votes = torch.zeros(test.shape[0], num_classes, device=device)
            votes.scatter_add_(1, neighbour_labels[:, :kk], weights[:, :kk])
            out[k] = votes
        yield start, out


def knn_predict(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    k: int,
    T: float,
    num_classes: int,
    chunk_size: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """Predicted label (int64 [N_test]) of each test sample by weighted k-NN with
    temperature T (ties go to the lower class index)."""
    preds = []
    for _, votes in _votes(train_feats, train_labels, test_feats, [k], T, num_classes, chunk_size):
        preds.append(votes[k].argmax(dim=1))
    if not preds:
        return torch.empty(0, dtype=torch.int64)
    return torch.cat(preds).cpu()


def knn_accuracy(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    k: int,
    T: float,
    num_classes: int,
    chunk_size: int = DEFAULT_CHUNK,
) -> float:
    """Top-1 accuracy (%) of weighted k-NN (the pre-training k-NN monitor uses this)."""
    return knn_metrics(
        train_feats, train_labels, test_feats, test_labels, [k], T, num_classes, chunk_size
    )[f"top1_k{k}"]


def knn_metrics(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    ks: Sequence[int],
    T: float,
    num_classes: int,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict[str, float]:
    """``{"top1_k<k>": %, "top5_k<k>": %}`` for every k (top-5 only when num_classes > 5;
    a sample counts as a top-5 hit when its class is among the five best-voted classes
    that received any vote)."""
    n = test_feats.shape[0]
    if n == 0:
        raise ValueError("k-NN accuracy needs at least one test sample")
    ks = list(dict.fromkeys(int(k) for k in ks))
    top1 = dict.fromkeys(ks, 0)
    top5 = dict.fromkeys(ks, 0)
    for start, votes in _votes(
        train_feats, train_labels, test_feats, ks, T, num_classes, chunk_size
    ):
        for k, v in votes.items():
            target = test_labels[start : start + v.shape[0]].to(v.device).view(-1, 1)
            best = v.topk(min(5, num_classes), dim=1)
            # a class no neighbour voted for is no prediction, even when it fills a
            # top-5 slot because fewer than five classes got votes
            hit = (best.indices == target) & (best.values > 0)
            top1[k] += int((v.argmax(dim=1, keepdim=True) == target).sum())  # as knn_predict
            top5[k] += int(hit.any(dim=1).sum())
    metrics = {}
    for k in ks:
        metrics[f"top1_k{k}"] = 100.0 * top1[k] / n
        if num_classes > 5:
            metrics[f"top5_k{k}"] = 100.0 * top5[k] / n
    return metrics


def check_labels(cfg: dict, labels: torch.Tensor, split: str) -> None:
    """Labels must index the configured classes, and a split must not be empty."""
    if labels.numel() == 0:
        raise DataError(
            f"{cfg['data']['dataset']} {split} split ({cfg['data']['root']}): no usable images"
        )
    top = int(labels.max())
    if top >= cfg["data"]["num_classes"] or int(labels.min()) < 0:
        raise ConfigError(
            f"data.num_classes={cfg['data']['num_classes']} but the {split} "
            f"split of {cfg['data']['dataset']} has label {top}"
        )


def primary_k(ks: Sequence[int], preferred: int = 20) -> int:
    """20 when listed (DINO's reported k), else the listed k closest to it (smaller on ties)."""
    return min(ks, key=lambda k: (abs(k - preferred), k))


def knn_eval(
    cfg: dict,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    log,
) -> tuple[dict[str, float], str]:
    """``folk eval knn``'s protocol on given features: (knn_metrics for every k of
    eval.knn.k, the name of the primary metric)."""
    kcfg = cfg["eval"]["knn"]
    check_labels(cfg, train_y, "train")
    check_labels(cfg, test_y, "test")
    device = features.eval_device()
    metrics = knn_metrics(
        train_x.to(device),
        train_y,
        test_x,
        test_y,
        kcfg["k"],
        kcfg["temperature"],
        cfg["data"]["num_classes"],
    )
    for name, value in metrics.items():
        log.info("knn %s = %.2f", name, value)
    return metrics, f"top1_k{primary_k(kcfg['k'])}"


def run(cfg: dict, run_dir: Path, out_dir: Path, log) -> dict:
    kcfg = cfg["eval"]["knn"]
    backbone = features.load_eval_backbone(run_dir, cfg)
    cache = features_cache_dir(run_dir)
    layout = dict(avgpool_patchtokens=kcfg["avgpool_patchtokens"])
    train_x, train_y = features.extract_features(backbone, cfg, "train", cache, log=log, **layout)
    test_x, test_y = features.extract_features(backbone, cfg, "test", cache, log=log, **layout)
    metrics, primary = knn_eval(cfg, train_x, train_y, test_x, test_y, log)
    return dict(
        dataset=cfg["data"]["dataset"],
        split="test",
        metrics=metrics,
        primary=primary,
        seed=cfg["experiment"]["seed"],
        epochs=0,
    )
