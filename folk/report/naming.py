"""Human-readable labels of backbones, datasets and variants, taken from a run's config.

Tables and figures show these labels; they are derived from configuration keys, never from
run directory names, so that a renamed run keeps its labels.
"""

from __future__ import annotations

import re

from folk.config import evaluated_subset
from folk.recipes import is_resnet, patch_size_of
from folk.utils.text import fmt_number

_VIT = re.compile(r"^(?:vit|deit)\w*?_(tiny|small|base|large|huge|giant)_patch(\d+)")
_VIT_SIZES = {"tiny": "T", "small": "S", "base": "B", "large": "L", "huge": "H", "giant": "g"}
_RESNET = re.compile(r"^resnet(\d+)")

DATASETS = {
    "imagenet": "ImageNet-1K",
    "fashion_mnist": "Fashion-MNIST",
    "imagefolder": "ImageFolder",
    "ade20k": "ADE20K",
    "fashion_mnist_composite": "Fashion-MNIST composite",
}

# order in which variants appear in tables and legends (the spec's table, then extras)
VARIANT_ORDER = [
    "mfm",
    "mfm_comrcom",
    "dino_2view",
    "folk_mfm_filters",
    "folk_random_frequency",
    "folk_random_patch",
    "folk_com_only",
    "folk_rcom_only",
    "folk_no_rec",
    "folk",
]


def variant_rank(variant: str) -> tuple[int, str]:
    return (
        VARIANT_ORDER.index(variant) if variant in VARIANT_ORDER else len(VARIANT_ORDER),
        variant,
    )


def backbone_label(
    arch: str, patch_size: int | None = None, img_size: int | None = None, custom: bool = False
) -> str:
    """``vit_small_patch16_224`` -> ``ViT-S/16``; ``resnet50`` -> ``ResNet-50``. A patch size
    or image size other than the architecture's own is part of the label (``ViT-T/4 @32px``), so
    a demo backbone never shares a column with the paper-scale one."""
    m = _VIT.match(arch)
    if m:
        patch = patch_size or int(m.group(2))
        label = f"ViT-{_VIT_SIZES[m.group(1)]}/{patch}"
    elif _RESNET.match(arch):
        label = f"ResNet-{_RESNET.match(arch).group(1)}"
    else:
        label = arch
    if custom:
        label += "*"
    if img_size and img_size != 224:
        label += f" @{img_size}px"
    return label


def run_backbone_label(cfg: dict) -> str:
    m = cfg["model"]
    is_vit = not is_resnet(m["arch"])
    custom = bool(m.get("depth") or m.get("embed_dim") or m.get("num_heads")) and is_vit
    return backbone_label(m["arch"], patch_size_of(m), m["img_size"], custom)


def dataset_label(name: str, subset: int = 0, labelled: int | None = None) -> str:
    """``name`` with its image count (``subset``, 0: the whole split) and, when the
    evaluations see another number of training images, theirs (``labelled``; 0: all)."""
    label = DATASETS.get(name, name)
    if subset:
        label += f" ({subset} img)"
    if labelled is not None and labelled != subset:
        label += f" ({labelled or 'all'} labelled)"
    return label


def run_dataset_label(cfg: dict) -> str:
    d = cfg["data"]
    label = dataset_label(d["dataset"], d.get("train_subset", 0), evaluated_subset(cfg, "train"))
    if d["dataset"] == "imagefolder":
        label = label.replace(
            "ImageFolder", f"ImageFolder:{str(d['root']).rstrip('/').split('/')[-1]}"
        )
    return label


def fmt_value(value) -> str:
    """Text of any configuration value, lists as {a, b}."""
    if isinstance(value, (list, tuple)):
        return "{" + ", ".join(fmt_value(v) for v in value) + "}"
    if isinstance(value, (int, float)):
        return fmt_number(value)
    if value is None:
        return "–"
    return str(value)
