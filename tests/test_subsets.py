"""Seeded label subsets and file lists (folk.data.subsets), checked against explicit
per-class counting on hand-made label arrays."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from folk.data.subsets import (
    class_balanced_indices,
    fewshot_list_name,
    read_file_list,
    split_train_val,
    write_file_list,
)
from folk.errors import DataError

# class sizes 10, 25, 3, 40 in shuffled order
LABELS = np.random.default_rng(123).permutation(np.repeat([0, 1, 2, 3], [10, 25, 3, 40]))


def per_class_counts(labels, idx) -> dict[int, int]:
    return dict(Counter(int(labels[i]) for i in idx))


def test_per_class_exact_counts_sorted_unique():
    idx = class_balanced_indices(LABELS, per_class=3, seed=0)
    assert list(idx) == sorted(set(idx.tolist()))
    assert per_class_counts(LABELS, idx) == {0: 3, 1: 3, 2: 3, 3: 3}


def test_per_class_too_few_names_the_class():
    with pytest.raises(DataError, match=r"class 2 \('bag'\) has 3 items, 4 wanted"):
        class_balanced_indices(LABELS, per_class=4, seed=0, class_names=["a", "b", "bag", "d"])


def test_seed_stability_and_seed_dependence():
    a = class_balanced_indices(LABELS, per_class=2, seed=7)
    b = class_balanced_indices(LABELS.tolist(), per_class=2, seed=7)
    c = class_balanced_indices(LABELS, per_class=2, seed=8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_smaller_subsets_nest_in_larger_ones():
    one = set(class_balanced_indices(LABELS, per_class=1, seed=3).tolist())
    three = set(class_balanced_indices(LABELS, per_class=3, seed=3).tolist())
    assert one < three


def test_fraction_rounds_half_up_with_at_least_one():
    # 0.1 * [10, 25, 3, 40] = [1, 2.5, 0.3, 4] -> [1, 3, 1, 4]
    idx = class_balanced_indices(LABELS, fraction=0.1, seed=0)
    assert per_class_counts(LABELS, idx) == {0: 1, 1: 3, 2: 1, 3: 4}
    full = class_balanced_indices(LABELS, fraction=1.0, seed=0)
    assert list(full) == list(range(len(LABELS)))


def test_total_spreads_remainder_over_classes():
    idx = class_balanced_indices(LABELS, total=10, seed=0)  # 10 = 4 * 2 + 2
    counts = per_class_counts(LABELS, idx)
    assert len(idx) == 10 and sorted(counts.values()) == [2, 2, 3, 3]
    with pytest.raises(DataError, match="class 2"):
        class_balanced_indices(LABELS, total=20, seed=0)  # class 2 has only 3 < 5


def test_exactly_one_mode():
    with pytest.raises(ValueError):
        class_balanced_indices(LABELS, per_class=1, fraction=0.5, seed=0)
    with pytest.raises(ValueError):
        class_balanced_indices(LABELS, seed=0)


def test_split_train_val_disjoint_and_stratified():
    train, val = split_train_val(LABELS, 0.2, seed=0)
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(len(LABELS)))
    # round(0.2 * [10, 25, 3, 40]) = [2, 5, 1 (0.6), 8]
    assert per_class_counts(LABELS, val) == {0: 2, 1: 5, 2: 1, 3: 8}
    again = split_train_val(LABELS, 0.2, seed=0)
    assert np.array_equal(val, again[1])
    assert not np.array_equal(val, split_train_val(LABELS, 0.2, seed=1)[1])


def test_split_keeps_one_item_classes_in_train():
    labels = np.array([0, 0, 0, 0, 1])
    train, val = split_train_val(labels, 0.5, seed=0)
    assert 4 in train and per_class_counts(labels, val) == {0: 2}


class FakeFolder:
    name = "fake"

    def __init__(self):
        self.relpaths = [
            "train/cat/a.jpg",
            "train/cat/b.jpg",
            "train/dog/c.jpg",
            "train/dog/a.jpg",
            "train/eel/e.jpg",
        ]


def test_file_list_round_trip(tmp_path):
    ds = FakeFolder()
    path = write_file_list(tmp_path / "sub.txt", ds, [4, 0, 2], header="three items\nseed 0")
    lines = path.read_text().splitlines()
    assert lines == [
        "# three items",
        "# seed 0",
        "train/cat/a.jpg",
        "train/dog/c.jpg",
        "train/eel/e.jpg",
    ]
    assert read_file_list(path, ds).tolist() == [0, 2, 4]


def test_file_list_accepts_split_relative_and_unique_bare_names(tmp_path):
    ds = FakeFolder()
    (tmp_path / "l.txt").write_text("dog/c.jpg\n\ne.jpg\n./train/cat/b.jpg\n")
    assert read_file_list(tmp_path / "l.txt", ds).tolist() == [1, 2, 4]
    # a.jpg exists in two classes: a bare name cannot say which
    (tmp_path / "amb.txt").write_text("c.jpg\na.jpg\n")
    with pytest.raises(DataError, match=r"amb\.txt.*line 2: 'a\.jpg'"):
        read_file_list(tmp_path / "amb.txt", ds)


def test_file_list_unknown_path_names_file_and_line(tmp_path):
    (tmp_path / "bad.txt").write_text("# header\ntrain/cat/a.jpg\ntrain/cow/z.jpg\n")
    with pytest.raises(DataError, match=r"bad\.txt.*line 3: 'train/cow/z\.jpg'"):
        read_file_list(tmp_path / "bad.txt", FakeFolder())
    with pytest.raises(DataError, match="does not exist"):
        read_file_list(tmp_path / "none.txt", FakeFolder())


def test_fewshot_list_names():
    assert fewshot_list_name(fraction=0.01, seed=0) == "fraction0.01_seed0.txt"
    assert fewshot_list_name(shot=5, seed=1) == "shot5_seed1.txt"
