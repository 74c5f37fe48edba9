"""Dataset preparation, as ``folk prepare`` runs it: put a dataset where the config says,
check it, and write its ``manifest.json``; or write the few-shot label lists; or
(``photos``) write a small tree of JPEG photographs to measure the input path on
(``folk.data.photos``).

Everything written stays under the dataset root the config names (``data.root``, or
``eval.segmentation.root`` for segmentation sets).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from torchvision import datasets as torchvision_datasets

from folk.data import segmentation
from folk.data.classification import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_COUNTS,
    FASHION_MNIST_FILES,
    FashionMNIST,
    build_base_dataset,
    scan_split,
)
from folk.data.manifest import (
    check_layout,
    listing_digest,
    raw_files_info,
    raw_files_intact,
    read_manifest,
    write_manifest,
)
from folk.data.photos import SOURCES, write_photos
from folk.data.subsets import (
    FEWSHOT_DIR,
    class_balanced_indices,
    fewshot_list_name,
    read_file_list,
    write_file_list,
)
from folk.errors import ConfigError, DataError
from folk.utils.io import atomic_write_bytes, atomic_write_json

# what ``prepare`` can prepare
TARGETS = ("fashion_mnist", "imagefolder", "imagenet", "ade20k", "composite", "fewshot", "photos")
FASHION_MNIST_DEFAULT_SOURCE = "/usr/share/datasets/fashion-mnist"
APT_HINT = "apt-get install -y dataset-fashion-mnist"

log = logging.getLogger(__name__)


def checked_root(value: str, key: str) -> Path:
    """``value`` as a directory path; a relative one must not lead out of the working
    directory (the project), so nothing is written outside it by accident. Checked on the
    resolved path: a symlink on the way (``data -> /elsewhere``) leads out as surely as
    ``..`` does."""
    if not value:
        raise ConfigError(f"key '{key}' is empty")
    p = Path(value)
    if not p.is_absolute():
        cwd = Path.cwd().resolve()
        real = (cwd / p).resolve()
        if not real.is_relative_to(cwd):
            via = "" if real == Path(os.path.normpath(cwd / p)) else " through a symlink"
            raise ConfigError(
                f"key '{key}' = '{value}' leaves the working directory "
                f"'{cwd}'{via}: it resolves to '{real}'; give a path inside "
                f"the project, or the absolute path '{real}' if that is where "
                f"the data belongs"
            )
        if real == cwd:
            raise ConfigError(
                f"key '{key}' = '{value}' is the working directory itself; "
                "give a dataset directory"
            )
    return p


def _inside(root: Path, *parts: str) -> Path:
    """``root/parts``, refused if it resolves outside ``root`` (a symlink out of it)."""
    target = root.joinpath(*parts)
    if not target.resolve().is_relative_to(root.resolve()):
        raise DataError(
            f"'{target}' resolves to '{target.resolve()}', outside the dataset "
            f"root '{root}'; refusing to write there"
        )
    return target


def _require_dataset(cfg: dict, want: str) -> None:
    if cfg["data"]["dataset"] != want:
        raise ConfigError(
            f"`folk prepare {want}` but the config has data.dataset = "
            f"'{cfg['data']['dataset']}' (data.root '{cfg['data']['root']}'); "
            f"set data.dataset: {want}"
        )


def _guard_other_dataset(root: Path, dataset: str) -> dict | None:
    """The manifest already in ``root``; a DataError when it belongs to another dataset
    (so that preparing one dataset never overwrites another's manifest)."""
    old = read_manifest(root)
    if old and old.get("dataset") != dataset:
        raise DataError(
            f"'{root / 'manifest.json'}' belongs to dataset "
            f"'{old.get('dataset')}', not '{dataset}'; use another root for "
            f"{dataset} or remove that directory"
        )
    return old


# ------------------------------------------------------------------ fashion_mnist


def _copy_files(src: Path, names, dst_root: Path) -> None:
    for name in names:
        atomic_write_bytes(_inside(dst_root, name), (src / name).read_bytes())


def _download_fashion_mnist(root: Path, names) -> str:
    """torchvision's own download into ``<root>/.download`` (removed afterwards); returns
    the source description. Raises what torchvision raises."""
    tmp = _inside(root, ".download")
    try:
        torchvision_datasets.FashionMNIST(str(tmp), train=True, download=True)
        torchvision_datasets.FashionMNIST(str(tmp), train=False, download=True)
        raw = tmp / "FashionMNIST" / "raw"
        _copy_files(raw, names, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return f"torchvision download ({', '.join(torchvision_datasets.FashionMNIST.mirrors)})"


def prepare_fashion_mnist(cfg: dict, force: bool = False) -> Path:
    _require_dataset(cfg, "fashion_mnist")
    root = checked_root(cfg["data"]["root"], "data.root")
    names = [f for pair in FASHION_MNIST_FILES.values() for f in pair]
    old = _guard_other_dataset(root, "fashion_mnist")
    if not force and old and raw_files_intact(root, old.get("raw_files", {})):
        log.info(f"fashion_mnist: '{root}' already prepared (manifest intact); nothing to do")
        return root / "manifest.json"

    source_dir = Path(cfg["data"]["source"] or FASHION_MNIST_DEFAULT_SOURCE)
    root.mkdir(parents=True, exist_ok=True)
    missing = [n for n in names if not (source_dir / n).is_file()]
    if not missing:
        log.info(f"fashion_mnist: copying {len(names)} IDX files from '{source_dir}' to '{root}'")
        _copy_files(source_dir, names, root)
        source = str(source_dir)
    else:
        log.warning(
            f"fashion_mnist: '{source_dir}' lacks {', '.join(missing)} "
            f"(data.source = '{cfg['data']['source']}'; the Debian/Ubuntu package installs "
            f"them with `{APT_HINT}`); trying torchvision's download instead"
        )
        try:
            source = _download_fashion_mnist(root, names)
        except Exception as exc:  # network errors come in many types
            raise DataError(
                f"cannot get Fashion-MNIST: tried '{source_dir}' (missing {', '.join(missing)}) "
                f"and torchvision's download ({type(exc).__name__}: {exc}); install the files "
                f"with `{APT_HINT}` or set data.source to a directory holding {', '.join(names)}"
            ) from None
        log.info(f"fashion_mnist: downloaded with torchvision into '{root}'")

    splits, class_counts = {}, {}
    for split, expected in FASHION_MNIST_COUNTS.items():
        ds = FashionMNIST(root, split)
        if len(ds) != expected or ds.images.shape[1:] != (28, 28):
            raise DataError(
                f"'{root / FASHION_MNIST_FILES[split][0]}' holds "
                f"{len(ds)} images of {ds.images.shape[1:]}, expected {expected} "
                "of 28x28"
            )
        splits[split] = len(ds)
        counts = [int((ds.targets == c).sum()) for c in range(len(FASHION_MNIST_CLASSES))]
        class_counts[split] = dict(zip(FASHION_MNIST_CLASSES, counts))
    path = write_manifest(
        root,
        {
            "dataset": "fashion_mnist",
            "root": str(root),
            "source": source,
            "splits": splits,
            "classes": FASHION_MNIST_CLASSES,
            "class_counts": class_counts,
            "image_size": [28, 28],
            "raw_files": raw_files_info(root, names),
        },
    )
    log.info(
        f"fashion_mnist: {splits['train']} train + {splits['test']} test images; wrote '{path}'"
    )
    return path


# ------------------------------------------------------------------ image folders


def _link_source_splits(root: Path, source: Path, splits) -> None:
    """Make ``<root>/<split>`` a link to ``<source>/<split>`` so the data stays where it is
    and only the manifest is written under the root."""
    root.mkdir(parents=True, exist_ok=True)
    for split in splits:
        link, target = root / split, (source / split).resolve()
        if link.is_symlink():
            if link.resolve() != target:
                raise DataError(
                    f"'{link}' links to '{link.resolve()}', not to data.source's "
                    f"'{target}'; remove the link or fix data.source"
                )
        elif link.exists():
            log.info(f"  '{link}' exists; using it rather than data.source's '{target}'")
        elif target.is_dir():
            link.symlink_to(target, target_is_directory=True)
            log.info(f"  linked '{link}' -> '{target}'")


def _folder_digests(root: Path, splits) -> dict | None:
    out = {}
    for split in splits:
        if not (root / split).is_dir():
            return None
        _, samples = scan_split(root, split)
        out[split] = listing_digest(root, [p for p, _ in samples])
    return out


def prepare_image_folder(
    cfg: dict, dataset: str, *, full: bool = False, sample_per_class: int = 10, force: bool = False
) -> Path:
    _require_dataset(cfg, dataset)
    d = cfg["data"]
    root = checked_root(d["root"], "data.root")
    splits = [d["train_split"], d["test_split"]]
    if d["source"]:
        _link_source_splits(root, Path(d["source"]), splits)
    old = _guard_other_dataset(root, dataset)
    if not force and old:
        check = old.get("decode_check", {})
        covers = check.get("mode") == "full" or (
            not full and (check.get("per_class") or 0) >= sample_per_class
        )
        if covers and old.get("files_digest") == _folder_digests(root, splits):
            log.info(
                f"{dataset}: '{root}' already prepared (manifest matches the files); "
                "nothing to do"
            )
            return root / "manifest.json"
    log.info(f"{dataset}: checking '{root}' (splits {', '.join(splits)})")
    info = check_layout(
        root,
        splits,
        num_classes=d["num_classes"],
        sample_per_class=sample_per_class,
        full=full,
        seed=cfg["experiment"]["seed"],
        progress=log.info,
    )
    _inside(root, "manifest.json")
    path = write_manifest(
        root, {"dataset": dataset, "root": str(root), "source": d["source"] or str(root), **info}
    )
    log.info(
        f"{dataset}: "
        + ", ".join(f"{s} {n} images" for s, n in info["splits"].items())
        + f"; wrote '{path}'"
    )
    return path


# ------------------------------------------------------------------ segmentation


def prepare_ade20k(cfg: dict) -> Path:
    root = checked_root(cfg["eval"]["segmentation"]["root"], "eval.segmentation.root")
    _guard_other_dataset(root, "ade20k")
    log.info(f"ade20k: checking '{root}'")
    info = segmentation.check_ade20k_layout(
        root, num_classes=cfg["eval"]["segmentation"]["num_classes"]
    )
    _inside(root, "manifest.json")
    path = write_manifest(root, {"dataset": "ade20k", "root": str(root), **(info or {})})
    log.info(f"ade20k: wrote '{path}'")
    return path


def prepare_composite(cfg: dict):
    checked_root(cfg["eval"]["segmentation"]["root"], "eval.segmentation.root")
    log.info(
        f"composite: building the Fashion-MNIST segmentation set in "
        f"'{cfg['eval']['segmentation']['root']}'"
    )
    result = segmentation.build_composite(cfg)
    counts = {
        s: v.get("images") if isinstance(v, dict) else v
        for s, v in (result or {}).get("splits", {}).items()
    }
    log.info(f"composite: done ({', '.join(f'{s} {n} images' for s, n in counts.items())})")
    return result


# ------------------------------------------------------------------ few-shot lists


def prepare_fewshot(cfg: dict) -> Path:
    """The label-subset lists of ``eval.fewshot``: for each seed, one per fraction and one
    per shot count, drawn from the whole training split with ``class_balanced_indices``;
    ``data.fewshot_file``, when set, is checked against the training split. An index of the
    lists goes to ``<data.root>/fewshot/lists.json``."""
    root = checked_root(cfg["data"]["root"], "data.root")
    fs = cfg["eval"]["fewshot"]
    ds = build_base_dataset(cfg, "train")
    log.info(
        f"fewshot: drawing lists from {len(ds)} training images of '{ds.name}' into "
        f"'{root / FEWSHOT_DIR}'"
    )
    out_dir = _inside(root, FEWSHOT_DIR)
    index = {}
    jobs = [("fraction", f) for f in fs["fractions"]] + [("shot", k) for k in fs["shots"]]
    for seed in fs["seeds"]:
        for kind, value in jobs:
            args = {"fraction": value} if kind == "fraction" else {"shot": value}
            name = fewshot_list_name(seed=seed, **args)
            idx = class_balanced_indices(
                ds.targets,
                seed=seed,
                class_names=ds.classes,
                **({"fraction": value} if kind == "fraction" else {"per_class": value}),
            )
            write_file_list(
                _inside(out_dir, name),
                ds,
                idx,
                header=f"folk few-shot list: {ds.name} train, {kind} {value}, "
                f"seed {seed}, {len(idx)} images",
            )
            index[name] = {"kind": kind, "value": value, "seed": seed, "images": len(idx)}
            log.info(f"  {name}: {len(idx)} images")
    user = cfg["data"]["fewshot_file"]
    if user:  # a user's own list: check now that every path is in the training set
        idx = read_file_list(user, ds)
        index["user"] = {
            "kind": "file",
            "value": str(user),
            "images": len(idx),
            "classes": int(len(set(ds.targets[idx].tolist()))),
        }
        log.info(f"  data.fewshot_file '{user}': {len(idx)} images, all found")
    atomic_write_json(
        _inside(out_dir, "lists.json"),
        {"dataset": ds.name, "train_images": len(ds), "lists": index},
    )
    return out_dir


# ------------------------------------------------------------------ photographs


def prepare_photos(cfg: dict, count: int = 200, force: bool = False) -> Path:
    """The photograph tree of ``folk.data.photos`` written into ``data.root`` (an image
    folder in every other respect: ``data.dataset: imagefolder``), then checked and given a
    manifest as ``folk prepare imagefolder`` does."""
    d = cfg["data"]
    if d["dataset"] != "imagefolder":
        raise ConfigError(
            f"`folk prepare photos` writes an image folder but the config has "
            f"data.dataset = '{d['dataset']}'; set data.dataset: imagefolder "
            "(params/bench-photos.yaml has the keys)"
        )
    if d["source"]:
        raise ConfigError(
            f"`folk prepare photos` writes its own files into data.root; "
            f"data.source = '{d['source']}' would be linked over them: leave "
            "it empty"
        )
    if d["num_classes"] != len(SOURCES) or d["in_chans"] != 3:
        raise ConfigError(
            f"the photographs are {len(SOURCES)} classes of colour images; "
            f"the config has data.num_classes = {d['num_classes']}, "
            f"data.in_chans = {d['in_chans']}"
        )
    root = checked_root(d["root"], "data.root")
    _guard_other_dataset(root, "imagefolder")
    _inside(root, d["train_split"])
    _inside(root, d["test_split"])
    write_photos(
        root, count, cfg["experiment"]["seed"], d["train_split"], d["test_split"], progress=log.info
    )
    return prepare_image_folder(cfg, "imagefolder", full=True, force=force)


# ------------------------------------------------------------------ any of them


def prepare(cfg: dict, target: str, *, full: bool, sample_per_class: int, force: bool, count: int):
    """Prepare one of ``TARGETS`` as the config describes it. ``full`` and
    ``sample_per_class`` concern image folders, ``count`` the photographs; ``force`` redoes
    work the manifest says is done."""
    if target not in TARGETS:
        raise ValueError(f"cannot prepare {target!r}; one of {', '.join(TARGETS)}")
    if target == "fashion_mnist":
        return prepare_fashion_mnist(cfg, force=force)
    if target in ("imagefolder", "imagenet"):
        return prepare_image_folder(
            cfg, target, full=full, sample_per_class=sample_per_class, force=force
        )
    if target == "ade20k":
        return prepare_ade20k(cfg)
    if target == "composite":
        return prepare_composite(cfg)
    if target == "photos":
        return prepare_photos(cfg, count, force=force)
    return prepare_fewshot(cfg)
