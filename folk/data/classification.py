"""Classification datasets: Fashion-MNIST from its IDX files, and image folders
(``<root>/<split>/<class>/*``, ImageNet's layout) that survive undecodable images.

Items are ``(PIL.Image, int label)`` (or ``(transform(image), label)`` when a transform is
given); an image that cannot be decoded gives ``None`` and a one-time warning naming it.
"""

from __future__ import annotations

import functools
import gzip
import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from folk.data.subsets import class_balanced_indices
from folk.errors import DataError

log = logging.getLogger(__name__)

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
# split: (images file, labels file)
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_MNIST_COUNTS = {"train": 60000, "test": 10000}
SPLITS = ("train", "test")

_IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension


# ------------------------------------------------------------------ IDX reading


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """An IDX file (gzip) as a uint8 array: big-endian header of a magic number and
    ``ndim`` sizes (16 bytes for images, 8 for labels), then the raw bytes."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"'{path}' is not a readable gzip file: {exc}") from None
    header = 4 * (1 + ndim)
    if len(raw) < header:
        raise DataError(f"'{path}' is too short to be an IDX file ({len(raw)} bytes)")
    fields = np.frombuffer(raw, dtype=">u4", count=1 + ndim)
    if int(fields[0]) != magic:
        raise DataError(f"'{path}' has IDX magic number {int(fields[0])}, expected {magic}")
    shape = tuple(int(x) for x in fields[1:])
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(f"'{path}' holds {len(raw)} bytes, its header {shape} implies {expected}")
    arr = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
    return arr


@functools.lru_cache(maxsize=4)
def _cached_idx(path: str, mtime_ns: int, size: int, magic: int, ndim: int) -> np.ndarray:
    # Keyed by mtime and size so that a re-prepared file is read again.
    arr = _read_idx(Path(path), magic, ndim)
    arr.setflags(write=False)  # shared between datasets: nobody may change it
    return arr


def read_idx_images(path: str | Path) -> np.ndarray:
    """(n, rows, cols) uint8 images of a gzip IDX file (read once per process)."""
    st = os.stat(path)
    return _cached_idx(str(Path(path).resolve()), st.st_mtime_ns, st.st_size, _IDX_IMAGES_MAGIC, 3)


def read_idx_labels(path: str | Path) -> np.ndarray:
    """(n,) uint8 labels of a gzip IDX file (read once per process)."""
    st = os.stat(path)
    return _cached_idx(str(Path(path).resolve()), st.st_mtime_ns, st.st_size, _IDX_LABELS_MAGIC, 1)


def _prepare_hint(dataset: str) -> str:
    return f"run `folk prepare {dataset} --config <your params file>`"


# ------------------------------------------------------------------ datasets


class FashionMNIST(Dataset):
    """Fashion-MNIST held in memory; item i of split s is named ``s/i`` in file lists."""

    name = "fashion_mnist"
    classes = FASHION_MNIST_CLASSES
    paths = None

    def __init__(
        self, root: str | Path, split: str, in_chans: int = 1, transform: Callable | None = None
    ):
        if split not in FASHION_MNIST_FILES:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.root, self.split = Path(root), split
        self.mode = "RGB" if in_chans == 3 else "L"
        self.transform = transform
        img_file, lbl_file = (self.root / f for f in FASHION_MNIST_FILES[split])
        for f in (img_file, lbl_file):
            if not f.is_file():
                raise DataError(
                    f"data.root '{self.root}' has no {f.name}; {_prepare_hint('fashion_mnist')}"
                )
        self.images = read_idx_images(img_file)
        labels = read_idx_labels(lbl_file)
        if len(labels) != len(self.images):
            raise DataError(
                f"'{img_file}' has {len(self.images)} images but '{lbl_file}' "
                f"has {len(labels)} labels"
            )
        if len(labels) == 0:
            raise DataError(f"'{img_file}' holds no images; {_prepare_hint('fashion_mnist')}")
        if labels.max() >= len(self.classes):
            raise DataError(f"'{lbl_file}' has label {int(labels.max())}, expected 0..9")
        self.targets = labels.astype(np.int64)

    @functools.cached_property
    def relpaths(self) -> list[str]:
        return [f"{self.split}/{i}" for i in range(len(self))]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        img = Image.fromarray(np.array(self.images[i]))  # 2-D uint8: mode "L"
        if self.mode == "RGB":
            img = img.convert("RGB")  # replicate the grey channel
        label = int(self.targets[i])
        return (self.transform(img) if self.transform else img), label


_warned: set[str] = set()


class UnusableImage(ValueError):
    """A decodable image whose values cannot be mapped to 0..255 without guessing."""


# integer modes read as 16-bit samples: Pillow opens 16-bit PNGs as "I;16" (or, from some
# files, as 32-bit "I" holding the same 0..65535 values)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _to_8bit(img) -> "np.ndarray":
    """The 8-bit grey levels of a 16-bit or float image. Pillow's own convert() clips such
    images at 255 (16-bit) or truncates them (float in 0..1 becomes 0 or 1), which leaves a
    white or black image with no error; here the full range is scaled instead:
    16-bit 0..65535 -> 0..255 and float 0..1 -> 0..255, rounded to the nearest level.
    Values outside those ranges have no known scale and raise UnusableImage."""
    arr = np.asarray(img)
    if img.mode == "F":
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise UnusableImage(
                f"float image (mode F) with values in [{arr.min()}, "
                f"{arr.max()}]; only 0..1 has a known scale"
            )
        return np.rint(arr.astype(np.float64) * 255).astype(np.uint8)
    wide = arr.astype(np.int64)
    if wide.min() < 0 or wide.max() > 65535:
        raise UnusableImage(
            f"integer image (mode {img.mode}) with values in [{wide.min()}, "
            f"{wide.max()}]; only 16-bit 0..65535 has a known scale"
        )
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)  # round half up


def convert_image(img, mode: str):
    """``img`` (any mode Pillow opens) as ``mode`` ("RGB" or "L"). 8-bit modes go through
    Pillow (palettes looked up, CMYK to RGB, grey replicated to three channels, RGB to grey
    by ITU-R 601-2 luma); an alpha channel is dropped, not composited, as torchvision's
    ImageFolder does; 16-bit and float images are rescaled to 0..255 first (``_to_8bit``).
    Raises UnusableImage (or Pillow's error) for what cannot be converted faithfully."""
    if img.mode in _SIXTEEN_BIT_MODES or img.mode == "F":
        img = Image.fromarray(_to_8bit(img), mode="L")
    return img.convert(mode)


def load_image(path: str, mode: str):
    """The decoded image converted to ``mode`` (``convert_image``), or None (warned once
    per path) when the file cannot be read, decoded or converted faithfully: one bad file
    must not stop a long run, and the caller counts the None items as skipped."""
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            img.load()
            return convert_image(img, mode)
    except Exception as exc:  # PIL raises many types for corrupt data
        if path not in _warned:
            _warned.add(path)
            log.warning("skipping undecodable image '%s': %s: %s", path, type(exc).__name__, exc)
        return None


def _list_images(
    class_dir: str, extensions: tuple[str, ...], seen_dirs: set, seen_files: dict
) -> list[str]:
    """Image files under ``class_dir`` in torchvision's order (directories sorted by path,
    names sorted within each), following symbolic links as torchvision does, but entering
    each directory once (by device and inode: a link back up the tree would otherwise be
    walked until the path is too long, listing every file again at each level) and
    listing each file once (a second name of an already listed file is left out with a
    warning, whichever class it is in: one image must not count twice or carry two labels)."""
    found: list[tuple[str, list[str]]] = []
    stack = [class_dir]
    while stack:
        directory = stack.pop()
        try:
            st = os.stat(directory)
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            log.warning("skipping unreadable directory '%s': %s", directory, exc.strerror or exc)
            continue
        if (st.st_dev, st.st_ino) in seen_dirs:
            log.warning(
                "skipping '%s': a directory already listed (a symbolic link loop or a "
                "second link to it)",
                directory,
            )
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        names, subdirs = [], []
        for entry in entries:
            try:
                is_dir = entry.is_dir()  # follows links
            except OSError:
                is_dir = False
            if is_dir:
                subdirs.append(entry.path)
            elif entry.name.lower().endswith(extensions):
                names.append(entry.name)
        found.append((directory, names))
        stack.extend(reversed(subdirs))  # the first name is entered first
    files = []
    for directory, names in sorted(found):
        for name in names:
            path = os.path.join(directory, name)
            try:
                st = os.stat(path)
            except OSError as exc:
                log.warning(
                    "skipping '%s': %s (a broken symbolic link?)", path, exc.strerror or exc
                )
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen_files:
                log.warning(
                    "skipping '%s': the same file as '%s', already listed", path, seen_files[key]
                )
                continue
            seen_files[key] = path
            files.append(path)
    return files


def scan_split(root: Path, split_dir: str) -> tuple[list[str], list[tuple[str, int]]]:
    """(sorted class names, [(path, label)]) of ``root/split_dir`` with torchvision's
    ImageFolder conventions (class = sub-directory, known image extensions, sorted);
    classes without images are kept, so callers can report them. Every directory is
    entered once and every file listed once, however symbolic links point
    (``_list_images``)."""
    split_path = root / split_dir
    classes = sorted(e.name for e in os.scandir(split_path) if e.is_dir())
    seen_dirs: set = set()
    seen_files: dict = {}
    samples = []
    for label, name in enumerate(classes):
        for path in _list_images(
            os.path.join(str(split_path), name), IMG_EXTENSIONS, seen_dirs, seen_files
        ):
            samples.append((path, label))
    return classes, samples


class ImageFolderDataset(Dataset):
    """``<root>/<split_dir>/<class>/<image>``; undecodable images give None."""

    def __init__(
        self,
        root: str | Path,
        split_dir: str,
        name: str = "imagefolder",
        in_chans: int = 3,
        transform: Callable | None = None,
    ):
        self.root, self.split, self.name = Path(root), split_dir, name
        self.mode = "RGB" if in_chans == 3 else "L"
        self.transform = transform
        split_path = self.root / split_dir
        if not self.root.is_dir():
            raise DataError(f"data.root '{self.root}' does not exist; {_prepare_hint(name)}")
        if not split_path.is_dir():
            raise DataError(
                f"split directory '{split_path}' does not exist "
                f"(data.root '{self.root}'); {_prepare_hint(name)}"
            )
        self.classes, samples = scan_split(self.root, split_dir)
        if not self.classes:
            raise DataError(f"split directory '{split_path}' has no class directories")
        targets = np.asarray([t for _, t in samples], dtype=np.int64)
        counts = np.bincount(targets, minlength=len(self.classes))
        empty = [str(split_path / c) for c, n in zip(self.classes, counts) if n == 0]
        if empty:
            raise DataError(
                f"{len(empty)} empty class director{'y' if len(empty) == 1 else 'ies'}"
                f" in '{split_path}': "
                + ", ".join(empty[:20])
                + (" ..." if len(empty) > 20 else "")
            )
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.paths = [p for p, _ in samples]
        self.targets = targets

    @functools.cached_property
    def relpaths(self) -> list[str]:
        base = self.root / self.split
        return [f"{self.split}/{Path(os.path.relpath(p, base)).as_posix()}" for p in self.paths]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        img = load_image(self.paths[i], self.mode)
        if img is None:
            return None
        label = int(self.targets[i])
        return (self.transform(img) if self.transform else img), label


class LabelledSubset(Dataset):
    """A subset that keeps what callers read from a dataset: ``targets``, ``classes``,
    ``name``, ``split``, ``paths`` and ``relpaths`` (restricted to the subset)."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.targets = np.asarray(dataset.targets)[self.indices]
        self.classes = dataset.classes
        self.name = dataset.name
        self.split = getattr(dataset, "split", None)
        self.root = getattr(dataset, "root", None)
        paths = getattr(dataset, "paths", None)
        self.paths = None if paths is None else [paths[i] for i in self.indices]

    @functools.cached_property
    def relpaths(self) -> list[str]:
        return [self.dataset.relpaths[i] for i in self.indices]

    @property
    def transform(self):
        return self.dataset.transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[int(self.indices[i])]


# ------------------------------------------------------------------ from a config


def split_dir(cfg: dict, split: str) -> str:
    """The directory (folders) or file set (Fashion-MNIST) that ``split`` names."""
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if cfg["data"]["dataset"] == "fashion_mnist":
        return split
    return cfg["data"]["train_split" if split == "train" else "test_split"]


def build_base_dataset(cfg: dict, split: str, transform: Callable | None = None):
    """The whole split, ignoring ``data.train_subset``/``data.test_subset`` (few-shot
    lists index this)."""
    d = cfg["data"]
    name = d["dataset"]
    if name == "fashion_mnist":
        ds = FashionMNIST(d["root"], split_dir(cfg, split), d["in_chans"], transform)
    elif name in ("imagefolder", "imagenet"):
        ds = ImageFolderDataset(d["root"], split_dir(cfg, split), name, d["in_chans"], transform)
    else:
        raise DataError(f"data.dataset {name!r} is not a classification dataset")
    if len(ds.classes) != d["num_classes"]:
        raise DataError(
            f"dataset '{name}' at data.root '{d['root']}' ({split}) has "
            f"{len(ds.classes)} classes but data.num_classes = {d['num_classes']}"
        )
    return ds


def build_dataset(cfg: dict, split: str, transform: Callable | None = None):
    """The ``split`` ("train" or "test") of ``data.dataset``; a seeded class-balanced subset
    when ``data.train_subset``/``data.test_subset`` > 0 (seed ``experiment.seed``; in an
    evaluation's configuration they hold ``eval.train_subset``/``eval.test_subset``).
    Items ``(image, label)``, image a PIL image (RGB if data.in_chans == 3, else "L") or
    ``transform(image)``; None for an undecodable image."""
    ds = build_base_dataset(cfg, split, transform)
    n = cfg["data"]["train_subset" if split == "train" else "test_subset"]
    if n and n < len(ds):
        idx = class_balanced_indices(
            ds.targets, total=n, seed=cfg["experiment"]["seed"], class_names=ds.classes
        )
        ds = LabelledSubset(ds, idx)
    elif n and n > len(ds):
        # an evaluation's data.*_subset is its eval.*_subset (folk.config.eval_config), and
        # a pre-training's eval.*_subset defaults to it: either may be the one to change
        evaluated = cfg.get("eval", {}).get(f"{split}_subset") == n
        also = f" (eval.{split}_subset for an evaluation)" if evaluated else ""
        raise DataError(
            f"data.{split}_subset = {n}{also} is larger than the {split} split of "
            f"'{ds.name}' at data.root '{cfg['data']['root']}' ({len(ds)} images)"
        )
    return ds


# ------------------------------------------------------------------ batching


def collate_skip_none(batch: list):
    """``(images, labels, n_skipped)`` of a batch whose undecodable items are None: images
    stacked (or, when each item holds a list of views, a list with one stacked tensor per
    view), labels a LongTensor, n_skipped the number of None items dropped. A batch of
    only None gives empty tensors (and an empty list for multi-view items)."""
    kept = [item for item in batch if item is not None]
    skipped = len(batch) - len(kept)
    if not kept:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    labels = torch.as_tensor([int(label) for _, label in kept], dtype=torch.long)
    first = kept[0][0]
    if isinstance(first, (list, tuple)):
        n_views = len(first)
        if any(len(img) != n_views for img, _ in kept):
            raise ValueError("items of one batch hold different numbers of views")
        images = [torch.stack([img[v] for img, _ in kept]) for v in range(n_views)]
    elif isinstance(first, torch.Tensor):
        images = torch.stack([img for img, _ in kept])
    else:
        raise TypeError(
            f"collate_skip_none needs tensor images (give the dataset a "
            f"transform), got {type(first).__name__}"
        )
    return images, labels, skipped
