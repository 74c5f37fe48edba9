"""``data.on_device``: a training split small enough for the training device's memory
(Fashion-MNIST's 60,000 images are 47 MB) held there as one uint8 tensor, its views cropped,
flipped and augmented on the device for a whole batch at once: no data loader at all.

The randomness is the loader path's: for each sample the RNG is seeded with (seed, epoch,
index) as ``folk.engine.data.SeededViews`` does, and the same transforms draw the same
numbers in the same order (crop box, flip, photometric row per view), so the crop boxes and
the photometric parameters are exactly those of the loader path. Only the resampling
differs: bicubic ``grid_sample`` (no antialiasing) instead of torchvision's antialiased
resize, the same for the upsampling crops of a small-image dataset, aliased when a crop is
larger than the view (a warning says so). Views are rounded to 8-bit levels as the loader's
uint8 crops are.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from folk.data.photometric import draw_params, to_unit_float
from folk.data.transforms import PretrainViews
from folk.errors import DataError
from folk.utils.seeding import sample_seed, seeded_cpu_rng

log = logging.getLogger(__name__)


def load_split(dataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, C, H, W), labels long (N,)) of every item of ``dataset``, on
    ``device``; every image must decode and all must share one size."""
    images, labels, sizes = [], [], set()
    for i in range(len(dataset)):
        item = dataset[i]
        if item is None:
            raise DataError(
                f"data.on_device: image {i} of the training split does not "
                f"decode; set data.on_device: false to train without it"
            )
        image, label = item
        tensor = (
            v2.functional.pil_to_tensor(image) if not isinstance(image, torch.Tensor) else image
        )
        sizes.add(tuple(tensor.shape))
        images.append(tensor)
        labels.append(int(label))
    if len(sizes) > 1:
        raise DataError(
            f"data.on_device needs images of one size; the training split has "
            f"{len(sizes)} (e.g. {sorted(sizes)[:3]}); set data.on_device: false"
        )
    return (torch.stack(images).to(device), torch.tensor(labels, device=device))


def _geometry(views: PretrainViews) -> list[tuple[v2.RandomResizedCrop, float]]:
    """Each view's crop transform and flip probability, read from the loader path's own
    transforms so that both draw alike."""
    out = []
    for compose in views.geometric:
        crop = next(t for t in compose.transforms if isinstance(t, v2.RandomResizedCrop))
        flip = next(t for t in compose.transforms if isinstance(t, v2.RandomHorizontalFlip))
        out.append((crop, flip.p))
    return out


def draw_view_params(
    geometry: list[tuple[v2.RandomResizedCrop, float]], specs: list, image: torch.Tensor, key: int
) -> list[tuple[tuple[int, int, int, int], bool, torch.Tensor]]:
    """Per view of one sample: (crop box (top, left, height, width), flipped, photometric
    row), drawn from the global RNG seeded with ``key`` in the loader path's order;
    ``geometry`` from ``_geometry``, ``image`` any tensor of the images' shape."""
    out = []
    with seeded_cpu_rng(key):
        for (crop, flip_p), spec in zip(geometry, specs):
            box = crop.make_params([image])
            flipped = bool(torch.rand(1) < flip_p)  # v2 flips when rand(1) < p
            out.append(
                ((box["top"], box["left"], box["height"], box["width"]), flipped, draw_params(spec))
            )
    return out


def crop_resize(
    images: torch.Tensor, boxes: torch.Tensor, flipped: torch.Tensor, size: int
) -> torch.Tensor:
    """Each of ``images`` (N, C, H, W, uint8 or float) cropped to its box (N, 4: top,
    left, height, width), mirrored where ``flipped``, resized to ``size`` (bicubic, pixel
    centres as ``interpolate(align_corners=False)``), float in [0, 1] rounded to 8 bits."""
    n, c, h, w = images.shape
    x = to_unit_float(images)
    boxes = boxes.to(device=x.device, dtype=torch.float32)
    top, left, bh, bw = boxes.unbind(dim=1)
    sign = 1.0 - 2.0 * flipped.to(device=x.device, dtype=torch.float32)
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = sign * bw / w
    theta[:, 0, 2] = (2 * left + bw) / w - 1
    theta[:, 1, 1] = bh / h
    theta[:, 1, 2] = (2 * top + bh) / h - 1
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    out = F.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=False)
    return out.clamp_(0.0, 1.0).mul_(255).round_().mul_(1.0 / 255)


class DeviceBatches:
    """Iterates like the pre-training DataLoader (``(views, labels, 0)`` per micro-batch,
    views in the ``augment.photometric: device`` layout: crops then parameter rows), from
    the split held on the device and the indices of ``sampler``."""

    def __init__(
        self,
        dataset,
        views: PretrainViews,
        sampler,
        micro_batch: int,
        seed: int,
        device: torch.device,
    ):
        if not views.on_device:
            raise DataError("data.on_device needs augment.photometric: device")
        self.images, self.labels = load_split(dataset, device)
        self.views, self.sampler, self.micro_batch = views, sampler, micro_batch
        self.seed, self.device, self._key = seed, device, sample_seed
        self.geometry = _geometry(views)
        self.sizes = [crop.size[0] for crop, _ in self.geometry]
        side = min(self.images.shape[-2:])
        if side > min(self.sizes):
            log.warning(
                "data.on_device: images of %d px are cropped to views of %d px "
                "without antialiasing (meant for small-image datasets)",
                side,
                min(self.sizes),
            )
        log.info(
            "data.on_device: %d images (%.1f MB) on %s",
            len(self.images),
            self.images.numel() / 2**20,
            device,
        )

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.micro_batch)

    def _batch(self, keys: list[tuple[int, int]]):
        drawn = [
            draw_view_params(
                self.geometry, self.views.specs, self.images[0], self._key(self.seed, e, i)
            )
            for e, i in keys
        ]
        index = torch.tensor([i for _, i in keys], device=self.device)
        images = self.images[index]
        out = []
        for v, size in enumerate(self.sizes):
            boxes = torch.tensor([d[v][0] for d in drawn])
            flipped = torch.tensor([d[v][1] for d in drawn])
            out.append(crop_resize(images, boxes, flipped, size))
        out.append(
            torch.stack([torch.stack([d[v][2] for v in range(len(self.sizes))]) for d in drawn])
        )
        return out, self.labels[index], 0

    def __iter__(self):
        keys = []
        for key in self.sampler:
            keys.append(key)
            if len(keys) == self.micro_batch:
                yield self._batch(keys)
                keys = []
        if keys:
            yield self._batch(keys)
