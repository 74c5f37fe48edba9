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

from folk.data.photometric import (
    ViewSpec,
    apply_photometric,
    blur_kernel_size,
    compile_wanted,
    draw_params,
    to_unit_float,
)

BICUBIC = InterpolationMode.BICUBIC


class PretrainViews:
    """PIL image -> the pre-training views of one image: two global views
    (``model.img_size``, view i blurred with probability ``augment.blur_prob[i]`` and
    solarised with ``augment.solarize_prob[i]``), then ``augment.local_crops_number`` local
    views of ``augment.local_crops_size`` px (blur probability 0.5, as in DINO).

    Each view: random resized crop and flip of the uint8 image, then its photometric
    parameter row (``folk.data.photometric.draw_params``). With
    ``augment.photometric: workers`` the views are finished here: a list of float tensors in
    [0, 1]. With ``device`` the photometric work is left to the training device
    (:func:`finish_views`): the list holds the uint8 views followed by one (n_views,
    N_PARAMS) tensor of their parameter rows."""

    def __init__(self, cfg: dict):
        a, size = cfg["augment"], cfg["model"]["img_size"]
        local = a["local_crops_size"]

        def geometric(s: int, scale) -> v2.Compose:
            return v2.Compose(
                [
                    v2.RandomResizedCrop(
                        s, scale=tuple(scale), interpolation=BICUBIC, antialias=True
                    ),
                    v2.RandomHorizontalFlip(p=a["flip_prob"]),
                    v2.ToPureTensor(),
                ]
            )

        c = cfg["data"]["in_chans"]
        self.geometric = [geometric(size, a["crop_scale"])] * 2 + [
            geometric(local, a["local_crops_scale"])
        ] * a["local_crops_number"]
        self.specs = [
            ViewSpec(a, c, a["blur_prob"][i], a["solarize_prob"][i]) for i in range(2)
        ] + [ViewSpec(a, c, 0.5, 0.0)] * a["local_crops_number"]
        self.kernel_sizes = [blur_kernel_size(size)] * 2 + [blur_kernel_size(local)] * a[
            "local_crops_number"
        ]
        self.on_device = a["photometric"] == "device"
        self.compiled = compile_wanted(a["compile"])  # on the CPU only; checked here, at once

    @property
    def n_views(self) -> int:
        return len(self.geometric)

    def __call__(self, img) -> list[torch.Tensor]:
        # to a uint8 tensor once per image (torch's uint8 resampling is ~2.5x faster than
        # Pillow's at these sizes)
        image = F.to_image(img)
        crops, rows = [], []
        for geometric, spec in zip(self.geometric, self.specs):
            crops.append(geometric(image).as_subclass(torch.Tensor))  # uint8 (C, H, W)
            rows.append(draw_params(spec))
        if self.on_device:
            return crops + [torch.stack(rows)]
        # one view at a time: batching a sample's views measured slower (the mixed
        # operations' gathers cost more than the calls they save)
        return [
            apply_photometric(to_unit_float(crop)[None], row[None], k, self.compiled)[0]
            for crop, row, k in zip(crops, rows, self.kernel_sizes)
        ]


def finish_views(batch: list[torch.Tensor], views: PretrainViews) -> list[torch.Tensor]:
    """A collated batch of ``views`` (already on the training device) as float views in
    [0, 1]: with ``augment.photometric: device`` the uint8 crops go through their parameter
    rows here, the whole batch at once; otherwise the batch is returned unchanged."""
    if not views.on_device:
        return batch
    *crops, rows = batch
    return [
        apply_photometric(to_unit_float(crop), rows[:, i], k, views.compiled)
        for i, (crop, k) in enumerate(zip(crops, views.kernel_sizes))
    ]


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
    return [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(cfg["data"]["mean"]), std=list(cfg["data"]["std"])),
        v2.ToPureTensor(),
    ]


def eval_transform(cfg: dict) -> v2.Compose:
    """Resize, centre crop ``model.img_size``, normalise with ``data.mean``/``data.std``."""
    size = cfg["model"]["img_size"]
    return v2.Compose([v2.ToImage(), ResizeForEval(size), v2.CenterCrop(size)] + _normalise(cfg))


def train_classifier_transform(cfg: dict) -> v2.Compose:
    """Linear-probe training: random resized crop (scale 0.08-1), flip, normalise."""
    size = cfg["model"]["img_size"]
    return v2.Compose(
        [
            v2.ToImage(),
            v2.RandomResizedCrop(size, interpolation=BICUBIC, antialias=True),
            v2.RandomHorizontalFlip(p=0.5),
        ]
        + _normalise(cfg)
    )


def normalize(x: torch.Tensor, cfg: dict) -> torch.Tensor:
    """``(x - mean) / std`` for a [0, 1] batch (N, C, H, W) or image (C, H, W) on any
    device, with ``data.mean``/``data.std`` as (1, C, 1, 1) tensors on ``x``'s device."""
    mean, std = cfg["data"]["mean"], cfg["data"]["std"]
    channels = x.shape[-3] if x.dim() >= 3 else -1
    if channels != len(mean):
        raise ValueError(
            f"normalize: tensor of shape {tuple(x.shape)} does not have "
            f"{len(mean)} channels (data.mean)"
        )
    shape = (1, -1, 1, 1) if x.dim() == 4 else (-1, 1, 1)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(shape)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(shape)
    return (x - m) / s
