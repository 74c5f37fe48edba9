"""Frozen-backbone image embeddings, cached on disk, shared by every frozen-feature evaluation.

ViT: the CLS token after the final norm; with ``n_last_blocks > 1`` the CLS tokens of the
last n blocks, each passed through the final norm, concatenated (DINO's linear protocol),
optionally followed by the average patch token of the last block. ResNet: global average
pool of the last stage (``n_last_blocks`` and ``avgpool_patchtokens`` do not apply).

The cache key is a digest of everything the features depend on: the backbone's weights
themselves (so a changed ``backbone.pt`` never reuses stale features, whatever its mtime),
the split and its data settings, the feature layout, the image size and the transform.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Subset

from folk.data import build_dataset, collate_skip_none
from folk.data.transforms import eval_transform
from folk.engine.device import training_device
from folk.errors import ConfigError, DamagedFileError, DataError
from folk.models import inference_layout, is_resnet, load_backbone
from folk.utils.io import atomic_torch_save, load_torch_file
from folk.utils.progress import progress

# bump when the layout of extracted features changes, to retire old cache files
CACHE_VERSION = 1
# data keys that do not change which images (or pixels) a split yields
_DATA_KEYS_IRRELEVANT = ("num_workers", "source")


def eval_device() -> torch.device:
    return training_device()


def load_eval_backbone(run_dir: str | Path, cfg: dict) -> nn.Module:
    """The run's teacher or student backbone (``eval.feature_source``), in eval mode."""
    backbone, _ = load_backbone(run_dir, cfg["eval"]["feature_source"])
    return backbone.eval()


# ---------------------------------------------------------------- the embedding itself


def embed_batch(
    backbone: nn.Module,
    images: torch.Tensor,
    n_last_blocks: int = 1,
    avgpool_patchtokens: bool = False,
) -> torch.Tensor:
    """(B, D') embeddings of one batch; see the module docstring for the layout."""
    if not hasattr(backbone, "blocks"):  # ResNet and other CNNs: pooled last stage
        return backbone.forward_head(backbone.forward_features(images), pre_logits=True)
    # every requested block output goes through the final norm, as DINO's
    # get_intermediate_layers does; for n=1 this is exactly forward_features()[:, 0]
    out = backbone.forward_intermediates(
        images,
        indices=n_last_blocks,
        norm=True,
        output_fmt="NLC",
        intermediates_only=True,
        return_prefix_tokens=True,
    )
    parts = []
    for patches, prefix in out:
        # a ViT without a class token (global_pool="avg" models) gets its mean patch token
        parts.append(
            prefix[:, 0] if prefix is not None and prefix.shape[1] > 0 else patches.mean(dim=1)
        )
    if avgpool_patchtokens:
        parts.append(out[-1][0].mean(dim=1))
    return torch.cat(parts, dim=-1)


def feature_dim(
    backbone: nn.Module, n_last_blocks: int = 1, avgpool_patchtokens: bool = False
) -> int:
    if not hasattr(backbone, "blocks"):
        return backbone.num_features
    return backbone.num_features * (n_last_blocks + int(avgpool_patchtokens))


# ---------------------------------------------------------------- cache key


def weights_digest(module: nn.Module) -> str:
    """sha256 over the names, dtypes, shapes and bytes of every tensor in the state dict."""
    h = hashlib.sha256(type(module).__name__.encode())
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cache_key(
    backbone: nn.Module,
    cfg: dict,
    split: str,
    n_last_blocks: int,
    avgpool_patchtokens: bool,
    indices: Sequence[int] | None,
    transform: Callable | None,
    cache_tag: str = "",
) -> str:
    data = {k: v for k, v in cfg["data"].items() if k not in _DATA_KEYS_IRRELEVANT}
    index_digest = None
    if indices is not None:
        index_digest = hashlib.sha256(
            torch.as_tensor(list(indices), dtype=torch.int64).numpy().tobytes()
        ).hexdigest()
    payload = {
        "version": CACHE_VERSION,
        "weights": weights_digest(backbone),
        "split": split,
        "n_last_blocks": n_last_blocks,
        "avgpool_patchtokens": avgpool_patchtokens,
        "indices": index_digest,
        "img_size": cfg["model"]["img_size"],
        "data": data,
        "seed": cfg["experiment"]["seed"],  # subsets are drawn with it
        # a transform's repr lists its parameters (torchvision v2); cache_tag covers the rest
        "transform": repr(transform) if transform is not None else "eval_transform",
        "tag": cache_tag,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return f"{split}-{hashlib.sha256(text.encode()).hexdigest()[:24]}"


# ---------------------------------------------------------------- extraction


def _check_layout(backbone: nn.Module, n_last_blocks: int) -> None:
    blocks = getattr(backbone, "blocks", None)
    if blocks is not None and not 1 <= n_last_blocks <= len(blocks):
        raise ConfigError(
            f"n_last_blocks={n_last_blocks}: the backbone has {len(blocks)} "
            f"blocks (eval.linear.n_last_blocks must be between 1 and "
            f"{len(blocks)})"
        )


def extract_features(
    backbone: nn.Module,
    cfg: dict,
    split: str,
    cache_dir: str | Path | None,
    *,
    n_last_blocks: int = 1,
    avgpool_patchtokens: bool = False,
    indices: Sequence[int] | None = None,
    transform: Callable | None = None,
    log: logging.Logger | None = None,
    cache_tag: str = "",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of ``split`` ("train" or "test") by the frozen ``backbone``.

    Returns ``(features float32 [N, D], labels int64 [N])`` on the CPU, where N excludes
    images that failed to decode. ``indices`` restricts to those dataset positions;
    ``transform`` replaces ``eval_transform(cfg)`` (give a ``cache_tag`` when its repr
    does not describe it fully). ``cache_dir=None`` disables the cache.
    """
    log = log or logging.getLogger(__name__)
    if is_resnet(cfg["model"]["arch"]) or not hasattr(backbone, "blocks"):
        n_last_blocks, avgpool_patchtokens = 1, False  # only one pooled feature exists
    _check_layout(backbone, n_last_blocks)

    path = None
    if cache_dir is not None:
        key = cache_key(
            backbone, cfg, split, n_last_blocks, avgpool_patchtokens, indices, transform, cache_tag
        )
        path = Path(cache_dir) / f"features-{key}.pt"
        if path.is_file():
            cached = _read_cache(path, log)
            if cached is not None:
                log.info(
                    "%s features: loaded %s from %s (%d undecodable image(s) skipped)",
                    split,
                    tuple(cached["features"].shape),
                    path,
                    int(cached["skipped"]),
                )
                return cached["features"], cached["labels"]

    feats, labels, skipped = _run_backbone(
        backbone, cfg, split, n_last_blocks, avgpool_patchtokens, indices, transform
    )
    if skipped:
        log.warning("%s: %d image(s) could not be decoded and were skipped", split, skipped)
    log.info(
        "%s features: %s (n_last_blocks=%d, avgpool_patchtokens=%s)",
        split,
        tuple(feats.shape),
        n_last_blocks,
        avgpool_patchtokens,
    )
    if path is not None:
        atomic_torch_save(
            {"features": feats, "labels": labels, "skipped": torch.tensor(skipped)}, path
        )
    return feats, labels


def _read_cache(path: Path, log: logging.Logger) -> dict | None:
    """A cache file's contents, or None (with a warning naming the file) when it is
    truncated, foreign or inconsistent: a cache is only ever a copy of what the backbone
    computes, so a damaged one is recomputed and overwritten, never an error."""
    try:
        cached = load_torch_file(path, "recomputing it", ("features", "labels", "skipped"))
        feats, labels, skipped = cached["features"], cached["labels"], cached["skipped"]
        if not (
            isinstance(feats, torch.Tensor)
            and isinstance(labels, torch.Tensor)
            and isinstance(skipped, torch.Tensor)
            and feats.ndim == 2
            and feats.is_floating_point()
            and labels.ndim == 1
            and labels.dtype == torch.int64
            and len(labels) == len(feats)
            and skipped.numel() == 1
        ):
            raise DamagedFileError(
                f"{path}: not a feature cache of [N, D] features and N labels; recomputing it"
            )
    except DamagedFileError as exc:
        log.warning("damaged feature cache: %s", exc)
        return None
    return cached


def _run_backbone(
    backbone: nn.Module,
    cfg: dict,
    split: str,
    n_last_blocks: int,
    avgpool_patchtokens: bool,
    indices: Sequence[int] | None,
    transform: Callable | None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    dataset: Dataset = build_dataset(
        cfg, split, transform if transform is not None else eval_transform(cfg)
    )
    if indices is not None:
        indices = [int(i) for i in indices]
        bad = [i for i in indices if not 0 <= i < len(dataset)]
        if bad:
            raise DataError(
                f"{cfg['data']['dataset']} {split} split at data.root "
                f"'{cfg['data']['root']}' has {len(dataset)} images; indices "
                f"{bad[:5]} are out of range"
            )
        dataset = Subset(dataset, indices)
    device = eval_device()
    loader = DataLoader(
        dataset,
        batch_size=cfg["eval"]["batch_size"],
        shuffle=False,
        num_workers=cfg["data"]["num_workers"],
        collate_fn=collate_skip_none,
        pin_memory=device.type == "cuda",
    )
    was_training = backbone.training
    backbone.eval().to(device)
    feats, labels, skipped = [], [], 0
    try:
        with torch.inference_mode(), inference_layout(backbone, device):
            for images, targets, n_skipped in progress(
                loader, desc=f"features {split}", unit="batch", leave=False
            ):
                skipped += int(n_skipped)
                if len(images) == 0:  # every image of the batch was undecodable
                    continue
                out = embed_batch(
                    backbone,
                    images.to(device, non_blocking=True),
                    n_last_blocks,
                    avgpool_patchtokens,
                )
                feats.append(out.float().cpu())
                labels.append(torch.as_tensor(targets, dtype=torch.int64).cpu())
    finally:
        backbone.train(was_training)
    if not feats:
        dim = feature_dim(backbone, n_last_blocks, avgpool_patchtokens)
        return torch.empty(0, dim), torch.empty(0, dtype=torch.int64), skipped
    return torch.cat(feats), torch.cat(labels), skipped
