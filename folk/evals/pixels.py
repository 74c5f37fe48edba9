"""``folk eval pixels``: the frozen-feature protocols on raw pixels, a reference row that
no pre-training can change.

The run's backbone is not read: the "features" of an image are its pixels after the
evaluation transform (``eval_transform``: resize, centre crop to ``model.img_size``,
normalise with ``data.mean``/``data.std``), flattened to ``in_chans * img_size**2`` values.
On them run exactly the two protocols of the frozen-feature evaluations, on the same
splits (``eval.train_subset``/``eval.test_subset``, seeded by ``experiment.seed``):

- weighted k-NN as ``folk eval knn`` (``folk.evals.knn.knn_eval``: L2-normalised features,
  ``eval.knn.k``, ``eval.knn.temperature``) -> ``knn_top1_k<k>`` (+ ``knn_top5_k<k>``);
- the linear probe as ``folk eval linear`` (``folk.evals.linear.probe``: the lr grid
  ``eval.linear.lrs`` trained together, chosen on the held-out ``eval.linear.val_fraction``)
  -> ``linear_top1``, ``linear_val_top1``, ``linear_best_lr`` (+ ``linear_top5``).

The primary metric is the k-NN task's (``knn_top1_k20`` when 20 is in eval.knn.k). Pixel
features are not cached (they are recomputed in the time it takes to decode the images);
the linear grid is checkpointed in the output directory as ``folk eval linear`` does.
Pixel features hold ``in_chans * img_size**2`` floats per image (588 KiB at 224 px RGB), so
a large dataset needs ``eval.train_subset``: the task refuses to start when the two splits
would not fit in the machine's memory.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from folk.data import build_dataset
from folk.errors import ConfigError
from folk.evals.features import extract_features
from folk.evals.knn import knn_eval
from folk.evals.linear import probe


class RawPixels(nn.Module):
    """A parameterless stand-in for a backbone whose embedding of an image is the image
    itself, flattened. It has the interface of a pooled CNN that
    ``folk.evals.features.embed_batch`` reads (``forward_features``, ``forward_head``,
    ``num_features``), so the extraction loop of the other evaluations runs unchanged."""

    def __init__(self, in_chans: int, img_size: int):
        super().__init__()
        self.num_features = in_chans * img_size * img_size

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def forward_head(self, x: torch.Tensor, pre_logits: bool = True) -> torch.Tensor:
        return x.flatten(1)


def feature_bytes(cfg: dict, n_images: int) -> int:
    d, size = cfg["data"], cfg["model"]["img_size"]
    return n_images * d["in_chans"] * size * size * 4  # float32


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not on every platform
        return None


def check_memory(cfg: dict, sizes: dict[str, int]) -> None:
    """Refuse, before decoding any image, pixel features that cannot fit in memory."""
    need = feature_bytes(cfg, sum(sizes.values()))
    have = _physical_memory()
    if have is not None and need > have:
        size = cfg["model"]["img_size"]
        raise ConfigError(
            f"folk eval pixels: {sizes['train']} train + {sizes['test']} test images of "
            f"{cfg['data']['in_chans']}x{size}x{size} pixels need {need / 2**30:.1f} GiB of "
            f"features, more than this machine's {have / 2**30:.1f} GiB; set "
            f"eval.train_subset/eval.test_subset (or a smaller model.img_size)"
        )


def pixel_features(cfg: dict, split: str, log=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features float32 [N, in_chans * img_size**2], labels int64 [N])`` of ``split``:
    the eval-transformed images flattened (undecodable images skipped, as everywhere)."""
    d = cfg["data"]
    return extract_features(
        RawPixels(d["in_chans"], cfg["model"]["img_size"]), cfg, split, None, log=log
    )


def run(cfg: dict, run_dir: Path, out_dir: Path, log) -> dict:
    sizes = {split: len(build_dataset(cfg, split)) for split in ("train", "test")}
    check_memory(cfg, sizes)
    log.info(
        "pixels: raw eval-transformed pixels as features (%d x %d px, %d channel(s)); "
        "the run's backbone is not used; %d train, %d test images, %.1f MiB",
        cfg["model"]["img_size"],
        cfg["model"]["img_size"],
        cfg["data"]["in_chans"],
        sizes["train"],
        sizes["test"],
        feature_bytes(cfg, sum(sizes.values())) / 2**20,
    )
    train_x, train_y = pixel_features(cfg, "train", log)
    test_x, test_y = pixel_features(cfg, "test", log)

    knn, knn_primary = knn_eval(cfg, train_x, train_y, test_x, test_y, log)
    linear = probe(cfg, train_x, train_y, test_x, test_y, out_dir, log)
    metrics = {f"knn_{name}": value for name, value in knn.items()}
    metrics.update({f"linear_{name}": value for name, value in linear.items()})
    primary = f"knn_{knn_primary}"
    log.info(
        "pixels: %s = %.2f, linear_top1 = %.2f", primary, metrics[primary], metrics["linear_top1"]
    )
    return dict(
        dataset=cfg["data"]["dataset"],
        split="test",
        metrics=metrics,
        primary=primary,
        seed=cfg["experiment"]["seed"],
        epochs=cfg["eval"]["linear"]["epochs"],
    )
