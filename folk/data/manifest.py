"""``manifest.json`` of a prepared dataset, and the layout check of image folders.

A manifest records what was prepared: dataset name, per-split and per-class counts, the
sha256 of raw files (Fashion-MNIST) or a digest of the sorted file list with sizes (image
folders), when and from where. ``folk prepare`` skips work when the manifest still matches
the data, and the workflow depends on the manifest file.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image

from folk.data.classification import convert_image, scan_split
from folk.errors import DataError
from folk.utils.io import atomic_write_json
from folk.utils.provenance import now_iso

MANIFEST = "manifest.json"
SCHEMA = "folk.manifest/1"


# ------------------------------------------------------------------ manifest file


def write_manifest(root: str | Path, info: dict) -> Path:
    """Write ``<root>/manifest.json`` (atomically): ``info`` plus ``schema`` and
    ``created_at`` (unless given)."""
    if "dataset" not in info:
        raise ValueError("a manifest needs a 'dataset' entry")
    record = {"schema": SCHEMA, **info}
    record.setdefault("created_at", now_iso())
    path = Path(root) / MANIFEST
    atomic_write_json(path, record)
    return path


def read_manifest(root: str | Path) -> dict | None:
    """The manifest of ``root`` (any JSON object with a ``dataset`` entry: segmentation
    sets write their own), or None when there is none or it is unreadable."""
    path = Path(root) / MANIFEST
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and "dataset" in data else None


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def raw_files_info(root: str | Path, names: Iterable[str]) -> dict:
    """``{name: {"sha256", "bytes"}}`` for files of ``root``."""
    root = Path(root)
    return {n: {"sha256": sha256_file(root / n), "bytes": (root / n).stat().st_size} for n in names}


def raw_files_intact(root: str | Path, recorded: dict) -> bool:
    """Whether every file a manifest lists still has its recorded size and sha256."""
    root = Path(root)
    for name, meta in recorded.items():
        p = root / name
        if (
            not p.is_file()
            or p.stat().st_size != meta.get("bytes")
            or sha256_file(p) != meta.get("sha256")
        ):
            return False
    return bool(recorded)


def listing_digest(root: str | Path, paths: Iterable[str]) -> str:
    """sha256 over the sorted ``relative/path<TAB>size`` lines of files: cheap to
    recompute (no decoding) and changes when a file is added, removed or resized."""
    root = Path(root)
    h = hashlib.sha256()
    for p in sorted(Path(os.path.relpath(p, root)).as_posix() for p in paths):
        h.update(f"{p}\t{(root / p).stat().st_size}\n".encode())
    return h.hexdigest()


# ------------------------------------------------------------------ folder layout


def decode_error(path: str) -> str | None:
    """Why the image at ``path`` cannot be decoded (or converted as the datasets convert
    it), or None when it can."""
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            img.load()  # a full decode (verify() misses truncation)
            convert_image(img, "RGB")
    except Exception as exc:  # PIL raises many types for corrupt data
        return f"{type(exc).__name__}: {exc}"
    return None


def _sample(paths: list[str], n: int, rng: np.random.Generator) -> list[str]:
    keys = rng.random(len(paths))
    return [paths[i] for i in np.argsort(keys, kind="stable")[:n]]


def check_layout(
    root: str | Path,
    splits: Iterable[str],
    *,
    num_classes: int | None = None,
    sample_per_class: int = 10,
    full: bool = False,
    seed: int = 0,
    workers: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Check ``<root>/<split>/<class>/<image>`` folders before any training: every split
    present, at least one class, no empty class, the same classes in every split (and
    ``num_classes`` of them when given), and images that decode (a seeded sample of
    ``sample_per_class`` per class, or all with ``full``). Raises one DataError listing
    every problem with its path; returns the manifest entries otherwise."""
    root, splits = Path(root), list(splits)
    say = progress or (lambda msg: None)
    problems: list[str] = []
    if not root.is_dir():
        raise DataError(f"dataset root '{root}' does not exist")
    found: dict[str, tuple[list[str], list[tuple[str, int]]]] = {}
    for split in splits:
        split_path = root / split
        if not split_path.is_dir():
            problems.append(f"missing split: '{split_path}' is not a directory")
            continue
        classes, samples = scan_split(root, split)
        if not classes:
            problems.append(f"no class directories in '{split_path}'")
            continue
        counts = np.bincount([t for _, t in samples], minlength=len(classes))
        for c, n in zip(classes, counts):
            if n == 0:
                problems.append(f"empty class: '{split_path / c}' has no image files")
        if num_classes is not None and len(classes) != num_classes:
            problems.append(
                f"'{split_path}' has {len(classes)} classes, data.num_classes = {num_classes}"
            )
        found[split] = (classes, samples)
        say(f"  {split}: {len(samples)} images in {len(classes)} classes")
    if len(found) > 1:
        first = next(iter(found))
        ref = set(found[first][0])
        for split in list(found)[1:]:
            other = set(found[split][0])
            for c in sorted(ref - other):
                problems.append(f"class '{c}' is in '{root / first}' but not in '{root / split}'")
            for c in sorted(other - ref):
                problems.append(f"class '{c}' is in '{root / split}' but not in '{root / first}'")

    # Decode: all images, or a seeded sample per class.
    rng = np.random.default_rng(seed)
    to_decode: list[str] = []
    for split, (classes, samples) in found.items():
        by_class: dict[int, list[str]] = {}
        for p, t in samples:
            by_class.setdefault(t, []).append(p)
        for t in sorted(by_class):
            paths = by_class[t]
            to_decode += paths if full else _sample(paths, sample_per_class, rng)
    say(
        f"  decoding {len(to_decode)} images ({'all' if full else f'{sample_per_class} per class'})"
    )
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:  # PIL decoders release the GIL
        for i, (p, err) in enumerate(
            zip(to_decode, pool.map(decode_error, to_decode, chunksize=64)), 1
        ):
            if err is not None:
                problems.append(f"unreadable image: '{p}' ({err})")
            if i % 50000 == 0:
                say(f"    {i}/{len(to_decode)} decoded")
    if problems:
        raise DataError(
            f"{len(problems)} problem(s) in dataset at '{root}':\n  " + "\n  ".join(problems)
        )
    info = {
        "splits": {s: len(smp) for s, (_, smp) in found.items()},
        "classes": found[splits[0]][0],
        "class_counts": {
            s: {
                c: int(n) for c, n in zip(cls, np.bincount([t for _, t in smp], minlength=len(cls)))
            }
            for s, (cls, smp) in found.items()
        },
        "files_digest": {
            s: listing_digest(root, [p for p, _ in smp]) for s, (_, smp) in found.items()
        },
        "decode_check": {
            "mode": "full" if full else "sample",
            "per_class": None if full else sample_per_class,
            "seed": seed,
            "images": len(to_decode),
        },
    }
    return info
