"""Semantic segmentation data: the ADE20K layout, its loader and joint transforms, and the
Fashion-MNIST composite set written in that same layout.

ADE20K layout (as distributed, ``ADEChallengeData2016``)::

    <root>/images/{training,validation}/<stem>.jpg
    <root>/annotations/{training,validation}/<stem>.png   (uint8, 0 = "other", 1..150 classes)

Labels are read with ``reduce_zero_label``: 0 becomes the ignore index, k becomes k - 1.
The composite set stores its labels shifted by one (background = 1, Fashion-MNIST class c =
c + 2) so that the same loader reads it unchanged, with 11 classes.
"""

from __future__ import annotations

import io
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from folk.data.classification import (
    FASHION_MNIST_CLASSES,
    FashionMNIST,
    UnusableImage,
    convert_image,
)
from folk.errors import DataError
from folk.utils.io import atomic_write_bytes, atomic_write_json

SPLITS = ("training", "validation")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ADE20K_NUM_CLASSES = 150

COMPOSITE_NUM_CLASSES = len(FASHION_MNIST_CLASSES) + 1  # + background
COMPOSITE_PREFIX = "composite_"
# composite split -> the Fashion-MNIST split it draws its items from
COMPOSITE_SOURCES = {"training": "train", "validation": "test"}


# ---------------------------------------------------------------- labels


def reduce_zero_label(mask: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """ADE20K stored labels -> training labels: 0 ("other") -> ignore_index, k -> k - 1."""
    out = mask.astype(np.int64) - 1
    out[mask == 0] = ignore_index
    return out


# ---------------------------------------------------------------- layout


def _split_files(directory: Path, suffixes: tuple[str, ...]) -> tuple[dict[str, Path], list[str]]:
    """``{stem: path}`` of the files with these suffixes, and problems (two files, one stem)."""
    files: dict[str, Path] = {}
    problems = []
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes:
            if path.stem in files:
                problems.append(f"{path}: same stem as {files[path.stem]}")
                continue
            files[path.stem] = path
    return files, problems


def _check_pair(image_path: Path, ann_path: Path, num_classes: int) -> list[str]:
    """Problems of one (image, annotation) pair: unreadable, wrong size, labels out of range."""
    problems = []
    image_size = None
    try:
        with Image.open(image_path) as im:
            im.load()
            image_size = im.size
    except Exception as exc:  # PIL raises many types for damaged files
        problems.append(f"{image_path}: unreadable image ({exc})")
    try:
        with Image.open(ann_path) as im:
            if im.mode not in ("L", "P", "I;16", "I"):
                problems.append(
                    f"{ann_path}: annotation must be single-channel, got mode {im.mode}"
                )
                return problems
            labels = np.asarray(im)
            ann_size = im.size
    except Exception as exc:
        problems.append(f"{ann_path}: unreadable annotation ({exc})")
        return problems
    top = int(labels.max()) if labels.size else 0
    if top > num_classes:
        problems.append(
            f"{ann_path}: label value {top} > {num_classes} (0 = ignored, "
            f"1..{num_classes} = classes)"
        )
    if image_size is not None and image_size != ann_size:
        problems.append(f"{ann_path}: size {ann_size} differs from its image's {image_size}")
    return problems


def check_ade20k_layout(
    root: str | Path, num_classes: int = ADE20K_NUM_CLASSES, decode: bool = True
) -> dict:
    """Check the ADE20K layout under ``root`` and return its manifest information.

    Every problem is collected before raising one DataError that lists them all with their
    paths: a missing split directory, an image without annotation or the reverse (matched
    by file stem), and with ``decode`` an unreadable file, an annotation whose size differs
    from its image's, or a label value above ``num_classes``. ``decode=False`` checks the
    structure only (fast: what an evaluation does before building its model)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"{root}: segmentation dataset root not found (expected "
            f"images/{{training,validation}} and annotations/{{training,validation}})"
        )
    problems: list[str] = []
    pairs: dict[str, list[tuple[Path, Path]]] = {}
    for split in SPLITS:
        image_dir, ann_dir = root / "images" / split, root / "annotations" / split
        missing = [d for d in (image_dir, ann_dir) if not d.is_dir()]
        problems += [f"{d}: missing directory" for d in missing]
        if missing:
            continue
        images, dup_images = _split_files(image_dir, IMAGE_SUFFIXES)
        anns, dup_anns = _split_files(ann_dir, (".png",))
        problems += dup_images + dup_anns
        for stem in sorted(images.keys() - anns.keys()):
            problems.append(f"{images[stem]}: no annotation {ann_dir / stem}.png")
        for stem in sorted(anns.keys() - images.keys()):
            problems.append(f"{anns[stem]}: annotation without an image in {image_dir}")
        both = sorted(images.keys() & anns.keys())
        if not both:
            problems.append(f"{image_dir}: no image with an annotation")
        pairs[split] = [(images[s], anns[s]) for s in both]
    if decode:
        jobs = [pair for split_pairs in pairs.values() for pair in split_pairs]
        with ThreadPoolExecutor(max_workers=8) as pool:  # PIL decodes without the GIL
            for found in pool.map(lambda p: _check_pair(*p, num_classes), jobs):
                problems += found
    if problems:
        listing = "\n  ".join(problems)
        raise DataError(f"{root}: segmentation layout has {len(problems)} problem(s):\n  {listing}")
    return {
        "layout": "ade20k",
        "root": str(root),
        "num_classes": num_classes,
        "splits": {split: {"images": len(p)} for split, p in pairs.items()},
    }


def list_pairs(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """Sorted (image, annotation) pairs of one split, matched by stem."""
    if split not in SPLITS:
        raise DataError(f"segmentation split must be one of {SPLITS}, got {split!r}")
    root = Path(root)
    image_dir, ann_dir = root / "images" / split, root / "annotations" / split
    for d in (image_dir, ann_dir):
        if not d.is_dir():
            raise DataError(f"{d}: missing directory")
    images, _ = _split_files(image_dir, IMAGE_SUFFIXES)
    anns, _ = _split_files(ann_dir, (".png",))
    stems = sorted(images.keys() & anns.keys())
    if not stems:
        raise DataError(f"{image_dir}: no image with an annotation in {ann_dir}")
    return [(images[s], anns[s]) for s in stems]


# ---------------------------------------------------------------- dataset and transforms


def rescaled_size(height: int, width: int, scale: int, ratio: float) -> tuple[int, int]:
    """Size after the mmseg-style keep-ratio rescale: to at most ``scale*ratio`` on the short
    side and ``4*scale*ratio`` on the long side (ADE20K's (2048, 512)); ``scale = 0``
    rescales the image's own size by ``ratio``."""
    if scale > 0:
        factor = ratio * min(scale / min(height, width), 4 * scale / max(height, width))
    else:
        factor = ratio
    return max(1, round(height * factor)), max(1, round(width * factor))


class SegTrainTransform:
    """Joint training transform: random rescale (ratio 0.5-2.0), random crop to
    ``crop_size`` (padding the image with 0 and the mask with the ignore index), horizontal
    flip, then float conversion and normalisation of the image."""

    def __init__(
        self,
        crop_size: int,
        scale: int,
        mean,
        std,
        ignore_index: int = 255,
        ratio_range: tuple[float, float] = (0.5, 2.0),
        flip_prob: float = 0.5,
    ):
        self.scale = scale
        self.ratio_range = ratio_range
        self.crop_flip = v2.Compose(
            [
                v2.RandomCrop(
                    crop_size,
                    pad_if_needed=True,
                    fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_index},
                ),
                v2.RandomHorizontalFlip(flip_prob),
            ]
        )
        self.normalize = v2.Compose(
            [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
        )

    def __call__(self, image, mask):
        lo, hi = self.ratio_range
        ratio = lo + (hi - lo) * torch.rand(()).item()
        size = list(rescaled_size(*image.shape[-2:], self.scale, ratio))
        image = TF.resize(image, size, antialias=True)
        mask = TF.resize(mask, size)  # a tv_tensors.Mask: nearest
        image, mask = self.crop_flip(image, mask)
        return self.normalize(image), mask


class SegEvalTransform:
    """Evaluation: the image is rescaled like training at ratio 1 and normalised; the mask
    keeps its original size (logits are resized back to it, metrics at full resolution)."""

    def __init__(self, scale: int, mean, std):
        self.scale = scale
        self.normalize = v2.Compose(
            [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
        )

    def __call__(self, image, mask):
        size = rescaled_size(*image.shape[-2:], self.scale, 1.0)
        if tuple(size) != tuple(image.shape[-2:]):
            image = TF.resize(image, list(size), antialias=True)
        return self.normalize(image), mask


class ADE20KSegmentation(Dataset):
    """``(image tensor (C, H, W), mask LongTensor (H, W))`` pairs of one split.

    Without a transform the image is uint8; the mask is always reduced (0 -> ignore_index,
    k -> k - 1). ``transform(image, mask)`` receives ``tv_tensors.Image`` and
    ``tv_tensors.Mask`` and returns them transformed."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform=None,
        in_chans: int = 3,
        ignore_index: int = 255,
    ):
        self.root = Path(root)
        self.split = split
        self.pairs = list_pairs(root, split)
        self.transform = transform
        self.mode = "RGB" if in_chans == 3 else "L"
        self.ignore_index = ignore_index

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        image_path, ann_path = self.pairs[index]
        with Image.open(image_path) as im:
            try:
                image = tv_tensors.Image(TF.pil_to_tensor(convert_image(im, self.mode)))
            except UnusableImage as exc:  # a mask needs its image: no item to skip to
                raise DataError(f"'{image_path}': {exc}") from None
        with Image.open(ann_path) as im:
            labels = reduce_zero_label(np.asarray(im), self.ignore_index)
        mask = tv_tensors.Mask(torch.from_numpy(labels))
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).long()


# ---------------------------------------------------------------- Fashion-MNIST items


def load_fashion_mnist(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8, labels (N,)) of the prepared ``train`` or ``test`` split,
    read by the classification data layer (one IDX reader for the project)."""
    ds = FashionMNIST(root, split)
    return np.asarray(ds.images), ds.targets


# ---------------------------------------------------------------- composite set


def composite_sample(
    rng: np.random.Generator,
    images: np.ndarray,
    labels: np.ndarray,
    canvas: int,
    items: int,
    threshold: int,
) -> tuple[np.ndarray, np.ndarray]:
    """One canvas: ``items`` random items at random positions, later ones on top.

    Only an item's pixels above ``threshold`` are pasted and labelled, so the label map
    shows exactly what the image shows. Returned labels are the stored ones: background 1,
    class c -> c + 2."""
    image = np.zeros((canvas, canvas), dtype=np.uint8)
    target = np.ones((canvas, canvas), dtype=np.uint8)
    h, w = images.shape[1:]
    for _ in range(items):
        k = int(rng.integers(len(images)))
        y = int(rng.integers(canvas - h + 1))
        x = int(rng.integers(canvas - w + 1))
        item = images[k]
        fg = item > threshold
        image[y : y + h, x : x + w][fg] = item[fg]
        target[y : y + h, x : x + w][fg] = labels[k] + 2
    return image, target


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def composite_params(cfg: dict) -> dict:
    seg = cfg["eval"]["segmentation"]
    return {
        "seed": cfg["experiment"]["seed"],
        "canvas": seg["composite_canvas"],
        "items": seg["composite_items"],
        "threshold": seg["composite_threshold"],
        "training": seg["composite_train"],
        "validation": seg["composite_test"],
        "source": str(Path(cfg["data"]["root"])),
    }


def _stale_files(root: Path) -> list[Path]:
    """Files already in the tree; refuse to mix composites with anything else."""
    found = []
    for sub in ("images", "annotations"):
        for split in SPLITS:
            d = root / sub / split
            if d.is_dir():
                found += [p for p in d.iterdir() if p.is_file()]
    foreign = [p for p in found if not re.fullmatch(rf"{COMPOSITE_PREFIX}\d+\.png", p.name)]
    if foreign:
        shown = ", ".join(map(str, foreign[:5]))
        raise DataError(
            f"eval.segmentation.root = {root} holds files that are not composites "
            f"({shown}{' ...' if len(foreign) > 5 else ''}); choose an empty "
            f"directory for the composite set"
        )
    return found


def build_composite(cfg: dict) -> dict:
    """Write the Fashion-MNIST composite segmentation set under ``eval.segmentation.root``.

    Deterministic from ``experiment.seed`` (one random stream per split); train canvases
    take items from Fashion-MNIST train, validation canvases from its test split. Written
    in the ADE20K layout with stored labels = class + 1, plus ``manifest.json`` (written
    last). Idempotent: an existing manifest with the same parameters is returned as is;
    different parameters rebuild the set."""
    seg = cfg["eval"]["segmentation"]
    root = Path(seg["root"])
    params = composite_params(cfg)
    manifest_path = root / "manifest.json"
    if manifest_path.is_file():
        try:
            old = json.loads(manifest_path.read_text())
        except json.JSONDecodeError:
            old = {}
        if old.get("params") == params:
            return old
    stale = _stale_files(root)
    width = max(6, len(str(max(params["training"], params["validation"]) - 1)))
    counts = {}
    for code, split in enumerate(SPLITS):
        images, labels = load_fashion_mnist(cfg["data"]["root"], COMPOSITE_SOURCES[split])
        rng = np.random.default_rng([params["seed"], code])
        hist = np.zeros(COMPOSITE_NUM_CLASSES + 1, dtype=np.int64)
        for i in range(params[split]):
            image, target = composite_sample(
                rng, images, labels, params["canvas"], params["items"], params["threshold"]
            )
            hist += np.bincount(target.ravel(), minlength=len(hist))
            name = f"{COMPOSITE_PREFIX}{i:0{width}d}.png"
            atomic_write_bytes(root / "images" / split / name, _png_bytes(image))
            atomic_write_bytes(root / "annotations" / split / name, _png_bytes(target))
        counts[split] = {
            "images": params[split],
            "source_split": COMPOSITE_SOURCES[split],
            "pixels_per_class": hist[1:].tolist(),
        }
    written = {
        root / sub / split / f"{COMPOSITE_PREFIX}{i:0{width}d}.png"
        for split in SPLITS
        for i in range(params[split])
        for sub in ("images", "annotations")
    }
    for path in stale:
        if path not in written:
            path.unlink()
    manifest = {
        "dataset": "fashion_mnist_composite",
        "layout": "ade20k",
        "root": str(root),
        "num_classes": COMPOSITE_NUM_CLASSES,
        "classes": ["background", *FASHION_MNIST_CLASSES],
        "label_encoding": "stored = class index + 1 (background 1, Fashion-MNIST class c -> "
        "c + 2, 0 unused); read with reduce_zero_label",
        "params": params,
        "splits": counts,
    }
    atomic_write_json(manifest_path, manifest)
    return manifest
