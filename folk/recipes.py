"""Training recipes of the methods each variant reproduces, and per-architecture defaults.

A configuration key whose default is null is decided here when the configuration is
resolved (``folk.config.resolve``); a value set in a params file or by ``--set`` always
wins. The resolved ``config.yaml`` of a run holds every decided value, and the names of
the presets it used, so nothing here has to be consulted to know what a run did.

Sources:
- DINO: ``main_dino.py`` of facebookresearch/dino (``DataAugmentationDINO`` and the
  argument defaults of the ViT-S/16 recipe); its README for the per-architecture choices.
- MFM: Jiahao000/MFM, ``data/data_mfm.py`` (``MFMTransform``), ``config.py`` and
  ``configs/*/mfm_pretrain__*.yaml``, ``main_mfm.py`` (linear scaling of all three learning
  rates), ``optimizer.py`` (no weight decay on the ``no_weight_decay()`` set).
"""

from __future__ import annotations

import copy
import re
from typing import Any

# ------------------------------------------------------------------ augmentation presets

_DINO_AUGMENT = {
    "flip_prob": 0.5,
    "color_jitter_prob": 0.8,
    "grayscale_prob": 0.2,
    "blur_prob": [1.0, 0.1],
    "solarize_prob": [0.0, 0.2],
}

AUGMENT_PRESETS: dict[str, dict[str, Any]] = {
    "dino": _DINO_AUGMENT,
    # FOLK reconstructs the unfiltered views, and DINO's recipe always blurs the first one.
    # Measured on the demo (scripts/measure_folk_blur.sh: folk, params/demo.yaml, seeds 0
    # and 1; mean loss_rec of the last quarter of the run / k-NN top-1 at k = 20):
    #   [1.0, 0.1] (DINO)  0.2857, 0.2834 / 47.3, 48.3
    #   [0.5, 0.5]         0.2880, 0.2870 / 47.5, 48.4
    #   [0.1, 0.1]         0.3176, 0.3167 / 47.3, 48.4
    # k-NN does not tell them apart (the seeds differ by 1 point, the settings by 0.2), while
    # blur makes the reconstruction 11 % easier: a blurred target has few high frequencies
    # left to recover. The student's Com views are already adaptive low-pass images, the
    # perturbation blur gave DINO. So both views get DINO's light blur (its second view's 0.1).
    "folk": {**_DINO_AUGMENT, "blur_prob": [0.1, 0.1]},
    # MFM: RandomResizedCrop(scale=(0.2, 1), bicubic) and a horizontal flip, nothing else,
    # so that the reconstruction target keeps its high frequencies
    "mfm": {
        "crop_scale": [0.2, 1.0],
        "flip_prob": 0.5,
        "color_jitter_prob": 0.0,
        "grayscale_prob": 0.0,
        "blur_prob": [0.0, 0.0],
        "solarize_prob": [0.0, 0.0],
    },
}


def dino_crop_scale(local_crops_number: int) -> list[float]:
    """DINO's global crop scale: (0.4, 1) belongs to multi-crop; without local crops DINO
    recommends the wider (0.14, 1)."""
    return [0.4, 1.0] if local_crops_number > 0 else [0.14, 1.0]


def augment_values(preset: str, local_crops_number: int) -> dict[str, Any]:
    values = copy.deepcopy(AUGMENT_PRESETS[preset])
    values.setdefault("crop_scale", dino_crop_scale(local_crops_number))
    return values


# ------------------------------------------------------------------ optimisation recipes

OPTIM_RECIPES: dict[str, dict[str, Any]] = {
    "mfm": {
        "pretrain.base_lr": 3.0e-4,  # per 512 images
        "pretrain.warmup_lr": 2.5e-7,  # per 512 images, scaled like base_lr
        "pretrain.min_lr": 2.5e-6,  # per 512 images, scaled like base_lr
        "pretrain.scale_min_lr": True,
        "pretrain.warmup_epochs": 20.0,
        "pretrain.cosine_after_warmup": False,  # timm CosineLRScheduler, warmup_prefix=False
        "pretrain.weight_decay": 0.05,
        "pretrain.weight_decay_end": 0.05,
        "pretrain.betas": [0.9, 0.95],
        "pretrain.no_wd_tokens": True,
        "pretrain.clip_mode": "global",  # torch's clip_grad_norm_ over all parameters
        "model.drop_path": 0.0,
    },
    "dino": {
        "pretrain.base_lr": 1.0e-3,  # DINO's 5e-4 per 256 images, stated per 512
        "pretrain.warmup_lr": 0.0,
        "pretrain.min_lr": 1.0e-6,
        "pretrain.scale_min_lr": False,
        "pretrain.warmup_epochs": 10.0,
        "pretrain.cosine_after_warmup": True,
        "pretrain.weight_decay": 0.04,
        "pretrain.weight_decay_end": 0.4,
        "pretrain.betas": [0.9, 0.999],
        "pretrain.no_wd_tokens": False,
        "pretrain.clip_mode": "per_param",  # DINO's clip_gradients: each tensor's own norm
        "model.drop_path": 0.1,
    },
}

# ------------------------------------------------------------------ per architecture

_LARGE_VIT = re.compile(r"^vit_(base|large|huge|giant)")


def is_resnet(arch: str) -> bool:
    return arch.startswith("resnet")


def patch_size_of(model: dict) -> int | None:
    """The ViT's patch side in px (``model.patch_size``); None for a CNN, which has none."""
    return None if is_resnet(model["arch"]) else model["patch_size"]


def arch_values(arch: str, depth: int = 0) -> dict[str, Any]:
    """DINO's and MFM's per-architecture choices; ``depth`` (``model.depth``, 0 for the
    architecture's own) caps the linear probe's blocks of a shortened ViT."""
    large = bool(_LARGE_VIT.match(arch))
    blocks = 1 if large else 4
    return {
        # DINO: dropping the last layer's weight normalisation is only safe with ViT-S
        "model.head_norm_last_layer": not arch.startswith("vit_small"),
        # DINO's linear protocol: ViT-S the last 4 CLS tokens; ViT-B the last one with the
        # mean patch token
        "eval.linear.n_last_blocks": min(blocks, depth) if depth else blocks,
        "eval.linear.avgpool_patchtokens": large,
        # MFM's SAMPLE_RATIO (probability of the low-pass filter)
        "filter.mfm_p_low": 0.3 if is_resnet(arch) else 0.5,
    }


# ------------------------------------------------------------------ nullable keys


def nullable_examples() -> dict[str, Any]:
    """Every key whose default is null and that this module decides, with a value of the
    type it takes: validation checks a set value against it, the JSON schema is made from it."""
    out = {f"augment.{k}": v for k, v in augment_values("dino", 0).items()}
    out.update(OPTIM_RECIPES["mfm"])
    out.update(arch_values("vit_small_patch16_224"))
    return out
