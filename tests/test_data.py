"""Data layer: Fashion-MNIST preparation and datasets (real files), image folders with a
corrupt image, layout checks, transforms, collation, few-shot lists."""

from __future__ import annotations

import gzip
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from folk.config import load_config
from folk.data import build_dataset, collate_skip_none, read_file_list
from folk.data.prepare import checked_root, prepare_fashion_mnist, prepare_fewshot
from folk.data.manifest import check_layout, read_manifest
from folk.data.transforms import (
    PretrainViews,
    ResizeForEval,
    eval_transform,
    normalize,
    train_classifier_transform,
)
from folk.errors import ConfigError, DataError

torch.set_num_threads(1)
FASHION_SOURCE = Path("/usr/share/datasets/fashion-mnist")


def cfg_for(
    root, *extra: str, dataset: str = "fashion_mnist", classes: int = 10, chans: int = 3
) -> dict:
    mean = "[0.5]" if chans == 1 else "[0.485, 0.456, 0.406]"
    std = "[0.25]" if chans == 1 else "[0.229, 0.224, 0.225]"
    return load_config(
        None,
        [
            f"data.dataset={dataset}",
            f"data.root={root}",
            f"data.num_classes={classes}",
            f"data.in_chans={chans}",
            f"data.mean={mean}",
            f"data.std={std}",
            "model.img_size=32",
            *extra,
        ],
    )


def idx_array(path: Path, offset: int) -> np.ndarray:
    """Independent reader: the raw bytes after the IDX header."""
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


# ------------------------------------------------------------------ Fashion-MNIST


@pytest.fixture(scope="module")
def fm_root(tmp_path_factory) -> Path:
    if not (FASHION_SOURCE / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(
            f"Fashion-MNIST not installed at {FASHION_SOURCE} "
            "(apt-get install dataset-fashion-mnist)"
        )
    root = tmp_path_factory.mktemp("fm") / "prepared"
    prepare_fashion_mnist(cfg_for(root))
    return root


def test_prepare_writes_manifest_with_true_counts(fm_root):
    m = read_manifest(fm_root)
    assert m["dataset"] == "fashion_mnist" and m["splits"] == {"train": 60000, "test": 10000}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        labels = idx_array(FASHION_SOURCE / f"{prefix}-labels-idx1-ubyte.gz", 8)
        expected = np.bincount(labels, minlength=10).tolist()
        assert list(m["class_counts"][split].values()) == expected
    assert set(m["raw_files"]) == {p.name for p in FASHION_SOURCE.glob("*.gz")}
    assert m["source"] == str(FASHION_SOURCE)


def test_prepare_is_idempotent_and_repairs(fm_root, caplog):
    caplog.set_level(logging.INFO, logger="folk")
    before = os.stat(fm_root / "manifest.json").st_mtime_ns
    prepare_fashion_mnist(cfg_for(fm_root))
    assert "nothing to do" in caplog.text
    assert os.stat(fm_root / "manifest.json").st_mtime_ns == before
    # a damaged file is noticed and copied again
    caplog.clear()
    victim = fm_root / "t10k-labels-idx1-ubyte.gz"
    victim.write_bytes(b"broken")
    prepare_fashion_mnist(cfg_for(fm_root))
    assert "copying" in caplog.text
    assert victim.read_bytes() == (FASHION_SOURCE / victim.name).read_bytes()


def test_fashion_mnist_items_match_raw_bytes(fm_root):
    train = build_dataset(cfg_for(fm_root, "data.in_chans=1", chans=1), "train")
    test = build_dataset(cfg_for(fm_root), "test")
    assert (len(train), len(test)) == (60000, 10000)
    assert train.name == "fashion_mnist" and len(train.classes) == 10
    assert train.targets.dtype == np.int64
    assert set(np.unique(train.targets).tolist()) == set(range(10))
    raw = idx_array(FASHION_SOURCE / "train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    raw_labels = idx_array(FASHION_SOURCE / "train-labels-idx1-ubyte.gz", 8)
    for i in (0, 1234, 59999):
        img, label = train[i]
        assert img.mode == "L" and img.size == (28, 28)
        assert np.array_equal(np.asarray(img), raw[i]) and label == raw_labels[i]
    img, label = test[5]
    arr = np.asarray(img)
    assert img.mode == "RGB" and arr.shape == (28, 28, 3)
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()


def test_train_subset_is_class_balanced_and_seeded(fm_root):
    base = build_dataset(cfg_for(fm_root), "train")
    sub = build_dataset(cfg_for(fm_root, "data.train_subset=1000"), "train")
    assert len(sub) == 1000
    assert np.bincount(sub.targets, minlength=10).tolist() == [100] * 10
    assert sub.name == "fashion_mnist" and sub.classes == base.classes
    for j in (0, 500, 999):
        i = int(sub.indices[j])
        assert sub.targets[j] == base.targets[i]
        assert np.array_equal(np.asarray(sub[j][0]), np.asarray(base[i][0]))
    again = build_dataset(cfg_for(fm_root, "data.train_subset=1000"), "train")
    other = build_dataset(cfg_for(fm_root, "data.train_subset=1000", "experiment.seed=1"), "train")
    assert np.array_equal(sub.indices, again.indices)
    assert not np.array_equal(sub.indices, other.indices)
    assert sub.relpaths[0] == f"train/{sub.indices[0]}"
    test = build_dataset(cfg_for(fm_root, "data.test_subset=25"), "test")
    assert sorted(np.bincount(test.targets, minlength=10).tolist()) == [2] * 5 + [3] * 5


def test_missing_root_and_wrong_class_count(tmp_path, fm_root):
    missing = tmp_path / "nowhere"
    with pytest.raises(
        DataError,
        match=f"'{missing}' has no train-images-idx3-ubyte.gz.*folk prepare fashion_mnist",
    ):
        build_dataset(cfg_for(missing), "train")
    with pytest.raises(DataError, match=f"'{missing}' does not exist"):
        build_dataset(cfg_for(missing, dataset="imagenet"), "train")
    with pytest.raises(DataError, match="10 classes but data.num_classes = 7"):
        build_dataset(cfg_for(fm_root, classes=7), "test")
    with pytest.raises(DataError, match="data.test_subset = 20000"):
        build_dataset(cfg_for(fm_root, "data.test_subset=20000"), "test")


def test_fallback_says_what_it_tried(tmp_path, monkeypatch, caplog):
    import torchvision.datasets

    class Offline:
        mirrors = ["http://example.invalid/"]

        def __init__(self, *a, **k):
            raise RuntimeError("no network")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", Offline)
    empty = tmp_path / "empty-source"
    empty.mkdir()
    with pytest.raises(DataError) as err:
        prepare_fashion_mnist(cfg_for(tmp_path / "out", f"data.source={empty}"))
    msg = str(err.value)
    assert str(empty) in msg and "apt-get install -y dataset-fashion-mnist" in msg
    assert "no network" in msg
    assert any(
        r.levelno == logging.WARNING and str(empty) in r.getMessage() for r in caplog.records
    )
    assert not (tmp_path / "out" / ".download").exists()


def test_prepare_fewshot_lists(fm_root):
    cfg = cfg_for(
        fm_root,
        "eval.fewshot.fractions=[0.01]",
        "eval.fewshot.shots=[2]",
        "eval.fewshot.seeds=[0, 1]",
    )
    out = prepare_fewshot(cfg)
    index = json.loads((out / "lists.json").read_text())
    assert sorted(index["lists"]) == [
        "fraction0.01_seed0.txt",
        "fraction0.01_seed1.txt",
        "shot2_seed0.txt",
        "shot2_seed1.txt",
    ]
    labels = idx_array(FASHION_SOURCE / "train-labels-idx1-ubyte.gz", 8)
    lines = [s for s in (out / "shot2_seed1.txt").read_text().splitlines() if not s.startswith("#")]
    picked = [int(s.split("/")[1]) for s in lines]
    assert all(s.startswith("train/") for s in lines)
    assert np.bincount(labels[picked], minlength=10).tolist() == [2] * 10
    frac = read_file_list(out / "fraction0.01_seed0.txt", build_dataset(cfg_for(fm_root), "train"))
    assert np.bincount(labels[frac], minlength=10).tolist() == [60] * 10
    assert (out / "shot2_seed0.txt").read_text() != (out / "shot2_seed1.txt").read_text()


def test_prepare_fewshot_checks_user_list(fm_root, tmp_path):
    good = tmp_path / "mine.txt"
    good.write_text("train/0\ntrain/59999\n")
    cfg = cfg_for(
        fm_root,
        "eval.fewshot.fractions=[]",
        "eval.fewshot.shots=[1]",
        "eval.fewshot.seeds=[0]",
        f"data.fewshot_file={good}",
    )
    index = json.loads((prepare_fewshot(cfg) / "lists.json").read_text())
    assert index["lists"]["user"]["images"] == 2
    bad = tmp_path / "bad.txt"
    bad.write_text("train/0\ntest/3\ntrain/60000\n")
    with pytest.raises(DataError, match=r"bad\.txt.*line 2: 'test/3'; line 3: 'train/60000'"):
        prepare_fewshot(
            cfg_for(
                fm_root,
                "eval.fewshot.fractions=[]",
                "eval.fewshot.shots=[1]",
                "eval.fewshot.seeds=[0]",
                f"data.fewshot_file={bad}",
            )
        )


def test_segmentation_preparation_dispatches(tmp_path, monkeypatch, capsys):
    """ade20k and composite go to folk.data.segmentation; the ade20k check's result lands in
    the manifest (a stand-in module records the calls)."""
    import types

    import folk.data.prepare as prepare

    calls = []
    fake = types.ModuleType("folk.data.segmentation")
    fake.check_ade20k_layout = lambda root, num_classes: calls.append(
        ("check", Path(root), num_classes)
    ) or {"splits": {"training": 4, "validation": 2}}
    fake.build_composite = lambda cfg: calls.append(
        ("build", cfg["eval"]["segmentation"]["root"])
    ) or {"dataset": "fashion_mnist_composite", "splits": {"training": {"images": 7}}}
    monkeypatch.setattr(prepare, "segmentation", fake)
    from folk.cli import main

    seg = tmp_path / "ade"
    seg.mkdir()
    params = tmp_path / "p.yaml"
    params.write_text(f"eval:\n  segmentation:\n    root: {seg}\n    num_classes: 11\n")
    assert main(["prepare", "ade20k", "--config", str(params)]) == 0
    m = read_manifest(seg)
    assert m["dataset"] == "ade20k" and m["splits"] == {"training": 4, "validation": 2}
    assert main(["prepare", "composite", "--config", str(params)]) == 0
    assert calls == [("check", seg, 11), ("build", str(seg))]
    assert "training 7 images" in capsys.readouterr().err


def test_checked_root_refuses_escapes():
    with pytest.raises(ConfigError, match="leaves the working directory"):
        checked_root("../elsewhere", "data.root")
    with pytest.raises(ConfigError, match="leaves the working directory"):
        checked_root("data/../../x", "data.root")
    assert checked_root("data/fm", "data.root") == Path("data/fm")


# ------------------------------------------------------------------ image folders


def write_jpeg(path: Path, seed: int, size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, "JPEG")


def make_tree(
    root: Path, splits=("train", "val"), classes=("cat", "dog", "eel"), per_class=3
) -> None:
    seed = 0
    for split in splits:
        for c in classes:
            for k in range(per_class):
                write_jpeg(root / split / c / f"{c}{k}.jpg", seed)
                seed += 1


def test_image_folder_yields_none_for_corrupt_file(tmp_path, caplog):
    make_tree(tmp_path)
    bad = tmp_path / "train" / "dog" / "dog1.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    cfg = cfg_for(tmp_path, dataset="imagefolder", classes=3)
    ds = build_dataset(cfg, "train")
    assert ds.classes == ["cat", "dog", "eel"] and len(ds) == 9
    assert ds.targets.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    i = ds.paths.index(str(bad))
    assert ds.relpaths[i] == "train/dog/dog1.jpg"
    with caplog.at_level("WARNING", logger="folk.data"):
        assert ds[i] is None
        assert ds[i] is None
    assert sum(str(bad) in r.getMessage() for r in caplog.records) == 1  # warned once
    img, label = ds[0]
    assert img.mode == "RGB" and img.size == (40, 30) and label == 0

    ds_t = build_dataset(cfg, "train", transform=eval_transform(cfg))
    loader = torch.utils.data.DataLoader(ds_t, batch_size=4, collate_fn=collate_skip_none)
    skipped, seen = 0, []
    for images, labels, n in loader:
        skipped += n
        seen += labels.tolist()
        assert images.shape == (len(labels), 3, 32, 32)
    assert skipped == 1 and seen == [0, 0, 0, 1, 1, 2, 2, 2]
    val = build_dataset(cfg, "test")  # data.test_split = val
    assert len(val) == 9 and val.relpaths[0] == "val/cat/cat0.jpg"


def test_layout_check_reports_every_problem(tmp_path):
    make_tree(tmp_path, splits=("train",))
    (tmp_path / "train" / "fox").mkdir()  # empty class
    bad = tmp_path / "train" / "eel" / "eel2.jpg"
    bad.write_bytes(b"garbage")
    with pytest.raises(DataError) as err:
        check_layout(tmp_path, ["train", "val"], full=True)
    msg = str(err.value)
    assert f"missing split: '{tmp_path / 'val'}'" in msg
    assert f"empty class: '{tmp_path / 'train' / 'fox'}'" in msg
    assert f"unreadable image: '{bad}'" in msg
    assert msg.startswith("3 problem(s)")


def test_layout_check_class_mismatch_and_sampling(tmp_path):
    make_tree(tmp_path, classes=("cat", "dog"))
    write_jpeg(tmp_path / "val" / "yak" / "y.jpg", 99)
    with pytest.raises(DataError, match=r"class 'yak' is in '.*val' but not in '.*train'"):
        check_layout(tmp_path, ["train", "val"], sample_per_class=1)
    (tmp_path / "val" / "yak" / "y.jpg").unlink()
    (tmp_path / "val" / "yak").rmdir()
    info = check_layout(tmp_path, ["train", "val"], sample_per_class=2, num_classes=2)
    assert info["splits"] == {"train": 6, "val": 6}
    assert info["class_counts"]["val"] == {"cat": 3, "dog": 3}
    assert info["decode_check"]["images"] == 2 * 2 * 2
    with pytest.raises(DataError, match="2 classes, data.num_classes = 5"):
        check_layout(tmp_path, ["train", "val"], num_classes=5)


def test_folk_prepare_imagefolder_cli(tmp_path, capsys):
    from folk.cli import main

    src = tmp_path / "src"
    make_tree(src)
    params = tmp_path / "p.yaml"
    params.write_text(
        f"data:\n  dataset: imagefolder\n  root: {tmp_path / 'prep'}\n"
        f"  source: {src}\n  num_classes: 3\n"
    )
    assert main(["prepare", "imagefolder", "--config", str(params)]) == 0
    m = read_manifest(tmp_path / "prep")
    assert m["splits"] == {"train": 9, "val": 9} and m["source"] == str(src)
    assert (tmp_path / "prep" / "train").resolve() == (src / "train").resolve()
    assert main(["prepare", "imagefolder", "--config", str(params)]) == 0
    assert "nothing to do" in capsys.readouterr().err
    # a new corrupt file changes the listing: checked again (in full), and reported
    (src / "val" / "eel" / "zz.jpg").write_bytes(b"junk")
    assert main(["prepare", "imagefolder", "--config", str(params), "--full"]) == 1  # data
    assert (
        f"unreadable image: '{tmp_path / 'prep' / 'val' / 'eel' / 'zz.jpg'}'"
        in capsys.readouterr().err
    )
    assert main(["prepare", "imagenet", "--config", str(params)]) == 2
    assert "data.dataset = 'imagefolder'" in capsys.readouterr().err
    # another dataset's manifest is never overwritten
    assert (
        main(["prepare", "imagenet", "--config", str(params), "--set", "data.dataset=imagenet"])
        == 1
    )  # a DataError: docs/api.md, "Exit codes"
    assert "belongs to dataset 'imagefolder'" in capsys.readouterr().err


# ------------------------------------------------------------------ transforms


def test_pretrain_views_shapes_range_and_seeding():
    cfg = cfg_for("unused", "augment.local_crops_number=2", "augment.local_crops_size=16")
    views = PretrainViews(cfg)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), np.uint8)).convert(
        "RGB"
    )
    torch.manual_seed(0)
    a = views(img)
    torch.manual_seed(0)
    b = views(img)
    assert [tuple(v.shape) for v in a] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 2
    assert all(type(v) is torch.Tensor and v.dtype == torch.float32 for v in a)
    assert all(v.min() >= 0 and v.max() <= 1 for v in a)
    assert not torch.equal(a[0], a[1])
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    torch.manual_seed(1)
    assert not torch.equal(views(img)[0], a[0])


def test_pretrain_views_grayscale():
    cfg = cfg_for("unused", chans=1)
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (28, 28), np.uint8))
    torch.manual_seed(0)
    out = PretrainViews(cfg)(img)
    assert len(out) == 2 and all(v.shape == (1, 32, 32) for v in out)


def test_eval_transform_normalises_and_resizes():
    cfg = cfg_for("unused")
    grey = Image.new("RGB", (28, 28), (100, 150, 200))
    out = eval_transform(cfg)(grey)
    assert out.shape == (3, 32, 32)
    mean, std = cfg["data"]["mean"], cfg["data"]["std"]
    for c, v in enumerate((100, 150, 200)):
        assert torch.allclose(out[c], torch.full((32, 32), (v / 255 - mean[c]) / std[c]), atol=1e-5)
    # larger than img_size: shorter side to 32 * 256 / 224 = 36, then centre crop
    resized = ResizeForEval(32)(Image.new("RGB", (100, 60)))
    assert resized.size == (60, 36)
    assert ResizeForEval(32)(Image.new("RGB", (28, 28))).size == (32, 32)
    assert eval_transform(cfg)(Image.new("RGB", (100, 60))).shape == (3, 32, 32)
    assert train_classifier_transform(cfg)(grey).shape == (3, 32, 32)


def test_normalize_matches_per_channel_loop():
    cfg = cfg_for("unused")
    x = torch.rand(2, 3, 4, 5, dtype=torch.float64)
    y = normalize(x, cfg)
    for c in range(3):
        expect = (x[:, c] - cfg["data"]["mean"][c]) / cfg["data"]["std"][c]
        assert torch.allclose(y[:, c], expect)
    assert y.dtype == torch.float64
    assert torch.allclose(normalize(x[0], cfg), y[0])
    with pytest.raises(ValueError, match="3 channels"):
        normalize(torch.rand(2, 1, 4, 4), cfg)


# ------------------------------------------------------------------ collation


def test_collate_skip_none_single_and_multi_view():
    t = lambda v: torch.full((1, 2, 2), float(v))
    images, labels, n = collate_skip_none([(t(1), 3), None, (t(2), 5), None])
    assert n == 2 and labels.tolist() == [3, 5] and labels.dtype == torch.long
    assert images.shape == (2, 1, 2, 2) and images[1].eq(2).all()
    views, labels, n = collate_skip_none([([t(1), t(2)], 0), None, ([t(3), t(4)], 1)])
    assert n == 1 and len(views) == 2 and views[0].shape == (2, 1, 2, 2)
    assert views[0][1].eq(3).all() and views[1][0].eq(2).all()
    images, labels, n = collate_skip_none([None, None])
    assert n == 2 and images.numel() == 0 and labels.numel() == 0
    assert labels.dtype == torch.long


def test_a_seeded_block_draws_the_seeds_stream_and_restores_the_rng():
    from folk.utils.seeding import seeded_cpu_rng

    torch.manual_seed(123)
    expected_after = torch.rand(4)
    torch.manual_seed(123)
    with seeded_cpu_rng(2**40 + 7):
        inside = torch.rand(5)
        perm = torch.randperm(6)
    reference = torch.Generator().manual_seed(2**40 + 7)
    assert torch.equal(inside, torch.rand(5, generator=reference))
    assert torch.equal(perm, torch.randperm(6, generator=reference))
    assert torch.equal(torch.rand(4), expected_after)  # the outer stream never moved
