"""Image transforms (torchvision.transforms.v2).

Pre-training views stay in [0, 1] and are *not* normalised: the frequency filters work on
[0, 1] images, and the engine normalises on the device after filtering (``normalize``).
Evaluation transforms return normalised tensors.
"""
from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

BICUBIC = InterpolationMode.BICUBIC


def blur_kernel_size(size: int) -> int:
    """DINO blurs 224 px views with a 23 px kernel: about a tenth of the view, odd, >= 3."""
    return max(3, int(0.1 * size) | 1)


def _to_unit_float() -> list:
    return [v2.ToDtype(torch.float32, scale=True), v2.ToPureTensor()]


def _photometric(cfg: dict, size: int, blur_p: float, solarize_p: float) -> list:
    """DINO's colour distortion, blur and solarisation; colour-only operations are left
    out for one-channel images."""
    a, rgb = cfg["augment"], cfg["data"]["in_chans"] == 3
    jitter = v2.ColorJitter(brightness=a["brightness"], contrast=a["contrast"],
                            saturation=a["saturation"] if rgb else 0,
                            hue=a["hue"] if rgb else 0)
    ops = [v2.RandomApply([jitter], p=a["color_jitter_prob"])]
    if rgb:
        ops.append(v2.RandomGrayscale(p=a["grayscale_prob"]))
    if blur_p > 0:
        ops.append(v2.RandomApply([v2.GaussianBlur(blur_kernel_size(size), sigma=(0.1, 2.0))],
                                  p=blur_p))
    if solarize_p > 0:
        ops.append(v2.RandomSolarize(threshold=128, p=solarize_p))  # uint8 images here
    return ops


class PretrainViews:
    """PIL image -> list of float tensors in [0, 1]: two global views (``model.img_size``,
    view i blurred with probability ``augment.blur_prob[i]`` and solarised with
    ``augment.solarize_prob[i]``), then ``augment.local_crops_number`` local views of
    ``augment.local_crops_size`` px (blur probability 0.5, as in DINO)."""

    def __init__(self, cfg: dict):
        a, size = cfg["augment"], cfg["model"]["img_size"]
        geometric = lambda s, scale: [
            v2.ToImage(),
            v2.RandomResizedCrop(s, scale=tuple(scale), interpolation=BICUBIC, antialias=True),
            v2.RandomHorizontalFlip(p=a["flip_prob"]),
        ]
        self.global_views = [
            v2.Compose(geometric(size, a["crop_scale"])
                       + _photometric(cfg, size, a["blur_prob"][i], a["solarize_prob"][i])
                       + _to_unit_float())
            for i in range(2)
        ]
        local = a["local_crops_size"]
        self.local_view = v2.Compose(geometric(local, a["local_crops_scale"])
                                     + _photometric(cfg, local, 0.5, 0.0)
                                     + _to_unit_float())
        self.local_crops_number = a["local_crops_number"]

    @property
    def n_views(self) -> int:
        return 2 + self.local_crops_number

    def __call__(self, img) -> list[torch.Tensor]:
        views = [t(img) for t in self.global_views]
        views += [self.local_view(img) for _ in range(self.local_crops_number)]
        return views


class ResizeForEval:
    """Shorter side to ``img_size * 256 / 224`` when the image is larger than ``img_size``
    (the usual 256 -> 224 centre crop), else straight to ``img_size`` (upscaling small
    images such as Fashion-MNIST's 28 px without cutting their border)."""

    def __init__(self, img_size: int):
        self.img_size = img_size
        self.large_size = int(img_size * 256 / 224)

    def __call__(self, img):
        h, w = F.get_size(img)
        target = self.large_size if min(h, w) > self.img_size else self.img_size
        return F.resize(img, [target], interpolation=BICUBIC, antialias=True)


def _normalise(cfg: dict) -> list:
    return [v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(cfg["data"]["mean"]), std=list(cfg["data"]["std"])),
            v2.ToPureTensor()]


def eval_transform(cfg: dict) -> v2.Compose:
    """Resize, centre crop ``model.img_size``, normalise with ``data.mean``/``data.std``."""
    size = cfg["model"]["img_size"]
    return v2.Compose([v2.ToImage(), ResizeForEval(size), v2.CenterCrop(size)]
                      + _normalise(cfg))


def train_classifier_transform(cfg: dict) -> v2.Compose:
    """Linear-probe training: random resized crop (scale 0.08-1), flip, normalise."""
    size = cfg["model"]["img_size"]
    return v2.Compose([v2.ToImage(),
                       v2.RandomResizedCrop(size, interpolation=BICUBIC, antialias=True),
                       v2.RandomHorizontalFlip(p=0.5)] + _normalise(cfg))


def normalize(x: torch.Tensor, cfg: dict) -> torch.Tensor:
    """``(x - mean) / std`` for a [0, 1] batch (N, C, H, W) or image (C, H, W) on any
    device, with ``data.mean``/``data.std`` as (1, C, 1, 1) tensors on ``x``'s device."""
    mean, std = cfg["data"]["mean"], cfg["data"]["std"]
    channels = x.shape[-3] if x.dim() >= 3 else -1
    if channels != len(mean):
        raise ValueError(f"normalize: tensor of shape {tuple(x.shape)} does not have "
                         f"{len(mean)} channels (data.mean)")
    shape = (1, -1, 1, 1) if x.dim() == 4 else (-1, 1, 1)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(shape)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(shape)
    return (x - m) / s
