"""Seeded label subsets (class-balanced subsets, few-shot lists, train/val splits) and the
file lists that record them.

Every draw ranks the items of each class by one array of random keys from
``numpy.random.default_rng(seed).random(n)``: PCG64 doubles are the same on every
platform, and ranking (rather than ``Generator.choice``, whose algorithm numpy may
change between versions) keeps the choice stable across numpy releases too. A useful
consequence: for one seed, smaller subsets are nested in larger ones (1 shot within 5
shots, 1 % within 10 %).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from folk.errors import DataError
from folk.utils.io import atomic_write_text

FEWSHOT_DIR = "fewshot"


def _labels_array(labels) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {arr.shape}")
    return arr.astype(np.int64, copy=False)


def _ranked_by_class(labels: np.ndarray, seed) -> dict[int, np.ndarray]:
    """For each class (ascending), its item indices in seeded random order."""
    keys = np.random.default_rng(seed).random(len(labels))
    out = {}
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        out[int(c)] = idx[np.argsort(keys[idx], kind="stable")]
    return out


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _class_name(c: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= c < len(class_names):
        return f"{c} ({class_names[c]!r})"
    return str(c)


def class_balanced_indices(
    labels,
    *,
    per_class: int | None = None,
    fraction: float | None = None,
    total: int | None = None,
    seed: int,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Sorted indices of a seeded class-balanced subset; give exactly one of

    - ``per_class``: that many items of every class (DataError naming a class with fewer);
    - ``fraction``: ``round(fraction * n_c)`` items of class c (half rounds up), at least 1;
    - ``total``: that many items in all, ``total // C`` per class and one more for
      ``total % C`` classes drawn with the same seed (DataError if a class is too small).
    """
    if sum(x is not None for x in (per_class, fraction, total)) != 1:
        raise ValueError("give exactly one of per_class, fraction, total")
    labels = _labels_array(labels)
    ranked = _ranked_by_class(labels, seed)
    classes = list(ranked)
    if not classes:
        raise DataError("cannot draw a subset from an empty dataset")
    if per_class is not None:
        if per_class < 1:
            raise ValueError(f"per_class must be >= 1, got {per_class}")
        want = {c: per_class for c in classes}
    elif fraction is not None:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        want = {c: max(1, _round_half_up(fraction * len(ranked[c]))) for c in classes}
    else:
        if total < 1:
            raise ValueError(f"total must be >= 1, got {total}")
        base, extra = divmod(total, len(classes))
        # A second stream, so the choice of classes does not shift the item ranking.
        lucky = set(np.random.default_rng([seed, 1]).permutation(len(classes))[:extra].tolist())
        want = {c: base + (i in lucky) for i, c in enumerate(classes)}
    short = [
        f"class {_class_name(c, class_names)} has {len(ranked[c])} items, {want[c]} wanted"
        for c in classes
        if len(ranked[c]) < want[c]
    ]
    if short:
        raise DataError("class-balanced subset impossible: " + "; ".join(short))
    chosen = np.concatenate([ranked[c][: want[c]] for c in classes])
    return np.sort(chosen)


def split_train_val(labels, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, disjoint (train_idx, val_idx), both sorted: per class
    ``round(val_fraction * n_c)`` items go to validation, at least one and never all of a
    class with two or more items (a one-item class stays in train)."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    labels = _labels_array(labels)
    train, val = [], []
    # Its own stream: a validation split must not coincide with a same-seed subset.
    for c, idx in _ranked_by_class(labels, [seed, 2]).items():
        n = len(idx)
        k = min(max(1, _round_half_up(val_fraction * n)), n - 1) if n >= 2 else 0
        val.append(idx[:k])
        train.append(idx[k:])
    cat = lambda parts: np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    return cat(train), cat(val)


# ------------------------------------------------------------------- file lists


def _item_names(dataset) -> list[str]:
    names = getattr(dataset, "relpaths", None)
    if names is None:
        raise DataError(
            f"dataset {getattr(dataset, 'name', type(dataset).__name__)!r} has no "
            "item paths, so file lists cannot refer to its items"
        )
    return list(names)


def _lookup(names: list[str]) -> dict[str, int]:
    """Every name an item may be given by in a file list: its path relative to the dataset
    root (``train/n01440764/x.JPEG``, ``train/17`` for Fashion-MNIST), relative to its split
    (``n01440764/x.JPEG``), or its bare file name when that is unique (ImageNet 1 % lists)."""
    table: dict[str, int] = {}
    bare: dict[str, int] = {}
    for i, name in enumerate(names):
        table[name] = i
        parts = name.split("/")
        if len(parts) > 1:
            table.setdefault("/".join(parts[1:]), i)
        if len(parts) > 2:
            base = parts[-1]
            bare[base] = -1 if base in bare else i
    for base, i in bare.items():
        if i >= 0:
            table.setdefault(base, i)
    return table


def read_file_list(path: str | Path, dataset) -> np.ndarray:
    """Indices into ``dataset`` (sorted, unique) of the items a file list names: one path per
    line, relative to the dataset root or its split; blank lines and ``#`` comments ignored.
    An unknown path is a DataError naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file list '{path}' does not exist")
    table = _lookup(_item_names(dataset))
    found, unknown = [], []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            key = entry.replace("\\", "/").removeprefix("./")
            if key not in table:
                unknown.append(f"line {lineno}: '{entry}'")
            else:
                found.append(table[key])
    if unknown:
        more = f" (and {len(unknown) - 10} more)" if len(unknown) > 10 else ""
        raise DataError(
            f"file list '{path}': {len(unknown)} path(s) not in dataset "
            f"{getattr(dataset, 'name', '?')!r}: " + "; ".join(unknown[:10]) + more
        )
    if not found:
        raise DataError(f"file list '{path}' names no items")
    return np.unique(np.asarray(found, dtype=np.int64))


def write_file_list(path: str | Path, dataset, indices, header: str = "") -> Path:
    """Write the root-relative paths of ``dataset[indices]``, one per line (atomically);
    ``header`` lines are written as ``#`` comments."""
    names = _item_names(dataset)
    lines = [f"# {h}" for h in header.splitlines()]
    lines += [names[int(i)] for i in np.sort(np.asarray(indices, dtype=np.int64))]
    atomic_write_text(Path(path), "\n".join(lines) + "\n")
    return Path(path)


def fewshot_list_name(*, seed: int, fraction: float | None = None, shot: int | None = None) -> str:
    """``fraction0.01_seed0.txt`` or ``shot5_seed1.txt``."""
    if (fraction is None) == (shot is None):
        raise ValueError("give exactly one of fraction, shot")
    what = f"fraction{fraction:g}" if fraction is not None else f"shot{int(shot)}"
    return f"{what}_seed{int(seed)}.txt"


def fewshot_list_path(
    cfg: dict, *, seed: int, fraction: float | None = None, shot: int | None = None
) -> Path:
    """Where ``folk prepare fewshot`` writes a list: ``<data.root>/fewshot/<name>``."""
    return (
        Path(cfg["data"]["root"])
        / FEWSHOT_DIR
        / fewshot_list_name(seed=seed, fraction=fraction, shot=shot)
    )
