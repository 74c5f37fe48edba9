"""`folk bench` on the CPU path: one JSON line per variant, the DINO baseline measured first;
`folk bench --data` on JPEG photographs (`folk prepare photos`): every measure of the input
path, its comparisons and the summary of what bounds a run, with no assertion on timings;
the workflow's bench rules."""

from __future__ import annotations

import json

import torch
from pathlib import Path

import pytest

from conftest import REPO
from folk.cli import main

TINY = [
    "model.arch=vit_tiny_patch16_224",
    "model.img_size=32",
    "model.patch_size=8",
    "model.depth=1",
    "model.embed_dim=32",
    "model.num_heads=2",
    "model.head_out_dim=64",
    "model.head_hidden_dim=32",
    "model.head_bottleneck_dim=16",
    "filter.mfm_radius=16",
]


def test_bench_prints_figures_with_baseline(tmp_path, capsys):
    out = tmp_path / "bench.jsonl"
    args = [
        "bench",
        "--variants",
        "folk,mfm",
        "--batch-size",
        "4",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--peak-tflops",
        "1.0",
        "--out",
        str(out),
    ]
    for item in TINY:
        args += ["--set", item]
    assert main(args) == 0
    printed = [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.startswith("{")]
    assert [r["variant"] for r in printed] == ["dino_2view", "folk", "mfm"]
    assert [r["baseline"] for r in printed] == [True, False, False]
    for r in printed:
        assert r["type"] == "bench" and r["images_per_s"] > 0 and r["step_time_ms"] > 0
        assert r["tflops"] > 0 and r["gflop_per_image"] > 0 and r["peak_memory_mb"] > 0
        assert 0 <= r["filter_fraction"] < 1 and r["mfu"] == r["tflops"]
        assert abs(r["images_per_s"] * r["step_time_ms"] / 1e3 - 4) < 0.05
    # two student views with backward and two teacher views cost more than one student view
    by = {r["variant"]: r for r in printed}
    assert by["folk"]["gflop_per_image"] > by["mfm"]["gflop_per_image"]
    assert [json.loads(l) for l in out.read_text().splitlines()] == printed


def test_bench_rejects_bad_config_before_measuring(capsys):
    assert main(["bench", "--variants", "folk,nope", "--set", "model.img_size=32"]) == 2
    assert "pretrain.variant" in capsys.readouterr().err


# ------------------------------------------------------------------ folk bench --data

PHOTOS_PARAMS = REPO / "params" / "bench-photos.yaml"
# the step and the views small enough for seconds on a CPU; the photographs stay 500x375
DATA_TINY = [s for s in TINY if not s.startswith("model.img_size")] + [
    "model.img_size=64",
    "data.num_workers=1",
    "augment.compile=off",
]


@pytest.fixture(scope="module")
def photos_root(tmp_path_factory) -> Path:
    from folk.data.photos import write_photos

    root = tmp_path_factory.mktemp("photos")
    write_photos(root, count=16, seed=0)
    return root


def _sets(items) -> list[str]:
    return [a for item in items for a in ("--set", item)]


def test_photos_are_seeded_jpeg_photographs(tmp_path, photos_root):
    from PIL import Image

    from folk.data.photos import SIZE, SOURCES, write_photos
    from folk.errors import DataError

    files = sorted((photos_root / "train").rglob("*.jpg"))
    assert len(files) == 16 and len(list((photos_root / "test").rglob("*.jpg"))) == 8
    assert sorted(p.name for p in (photos_root / "train").iterdir()) == sorted(SOURCES)
    with Image.open(files[0]) as img:
        assert img.format == "JPEG" and img.size == SIZE and img.mode == "RGB"
    # two crops of one source differ; the same seed gives the same bytes, another does not
    same = write_photos(tmp_path / "again", count=16, seed=0)
    assert same["count"] == 16
    again = sorted((tmp_path / "again" / "train").rglob("*.jpg"))
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in files]
    assert files[0].read_bytes() != files[8].read_bytes()  # astronaut 0 and 8
    write_photos(tmp_path / "other", count=16, seed=1)
    assert (
        tmp_path / "other" / "train" / files[0].parent.name / files[0].name
    ).read_bytes() != files[0].read_bytes()
    # the same request writes nothing; a new one replaces the tree it owns, not another's
    stamp = again[0].stat().st_mtime_ns
    write_photos(tmp_path / "again", count=16, seed=0)
    assert again[0].stat().st_mtime_ns == stamp
    write_photos(tmp_path / "again", count=8, seed=0)
    assert len(list((tmp_path / "again" / "train").rglob("*.jpg"))) == 8
    (tmp_path / "user" / "train" / "cats").mkdir(parents=True)
    with pytest.raises(DataError, match="not written by `folk prepare photos`"):
        write_photos(tmp_path / "user", count=8)
    assert (tmp_path / "user" / "train" / "cats").is_dir()


def test_folk_prepare_photos(tmp_path, capsys):
    from folk.data.manifest import read_manifest

    root = tmp_path / "photos"
    argv = [
        "prepare",
        "photos",
        "--config",
        str(PHOTOS_PARAMS),
        "--count",
        "8",
        "--set",
        f"data.root={root}",
    ]
    assert main(argv) == 0
    m = read_manifest(root)
    assert m["dataset"] == "imagefolder" and m["splits"] == {"train": 8, "test": 8}
    assert main(argv) == 0
    assert "nothing to write" in capsys.readouterr().err
    assert main(argv + ["--set", "data.num_classes=10"]) == 2
    assert "8 classes" in capsys.readouterr().err


def test_reference_pipelines_make_what_their_sources_make(photos_root):
    import torch

    from folk.benchmark.input_path import DecodeCrop, DinoReference, MfmReference
    from folk.config import load_config
    from folk.data.classification import load_image

    cfg = load_config(PHOTOS_PARAMS, ["model.img_size=64"])
    img = load_image(str(next((photos_root / "train").rglob("*.jpg"))), "RGB")
    dino = DinoReference(cfg)(img)
    assert [v.shape for v in dino] == [(3, 64, 64)] * 2 and dino[0].dtype == torch.float32
    assert dino[0].min() < 0  # normalised, as DINO hands its views to the model
    mfm = MfmReference(cfg)(img)
    assert mfm.shape == (3, 64, 64) and 0 <= mfm.min() and mfm.max() <= 1
    floor = DecodeCrop(cfg)(img)
    assert [v.dtype for v in floor] == [torch.uint8] * 2


def test_summary_says_what_bounds_the_run():
    from folk.benchmark.input_path import summarise

    fed = summarise(loader_per_core=100.0, step_ips=300.0, whole_ips=280.0, workers=4)
    assert fed["bound"] == "step" and fed["loader_images_per_s"] == 400.0
    assert fed["cores_to_feed_step"] == 3.0 and fed["whole_vs_bound"] == pytest.approx(0.933)
    starved = summarise(loader_per_core=100.0, step_ips=300.0, whole_ips=150.0, workers=2)
    assert starved["bound"] == "loader" and starved["expected_images_per_s"] == 200.0
    serial = summarise(loader_per_core=100.0, step_ips=300.0, whole_ips=None, workers=0)
    assert serial["bound"] == "loader" and serial["expected_images_per_s"] == 75.0
    assert "whole_images_per_s" not in serial


def test_bench_data_prints_every_measure(tmp_path, photos_root, capsys):
    out = tmp_path / "bench_data.jsonl"
    argv = [
        "bench",
        "--data",
        "--config",
        str(PHOTOS_PARAMS),
        "--rounds",
        "2",
        "--images",
        "4",
        "--batch-size",
        "4",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--iterations",
        "2",
        "--out",
        str(out),
    ] + _sets(DATA_TINY + [f"data.root={photos_root}"])
    assert main(argv) == 0
    captured = capsys.readouterr()
    printed = [json.loads(l) for l in captured.out.splitlines() if l.startswith("{")]
    assert [(r["measure"], r.get("pipeline")) for r in printed] == [
        ("loader", "pretrain_views"),
        ("loader", "dino_reference"),
        ("loader", "mfm_reference"),
        ("loader", "decode_crop"),
        ("step", None),
        ("whole", None),
        ("summary", None),
    ]
    assert all(
        r["type"] == "bench_data"
        and r["batch_size"] == 4
        and r["num_workers"] == 1
        and r["dataset_images"] == 16
        and r["img_size"] == 64
        for r in printed
    )
    by = {r.get("pipeline") or r["measure"]: r for r in printed}
    for name in ("pretrain_views", "dino_reference", "mfm_reference", "decode_crop"):
        r = by[name]
        assert len(r["rounds_images_per_s"]) == 2 and r["per_core"] == r["images_per_s"] > 0
        assert abs(r["ms_per_image"] * r["per_core"] / 1e3 - 1) < 0.01
    assert [
        by[n]["views_per_image"]
        for n in ("pretrain_views", "dino_reference", "mfm_reference", "decode_crop")
    ] == [2, 2, 1, 2]
    ours = by["pretrain_views"]
    assert ours["dino_per_core"] == by["dino_reference"]["per_core"]
    # paired by round: the median of the rounds' own ratios (2 rounds: their mean)
    rounds = {
        n: by[n]["rounds_images_per_s"] for n in ("pretrain_views", "dino_reference", "decode_crop")
    }
    ratios = [o / d for o, d in zip(rounds["pretrain_views"], rounds["dino_reference"])]
    assert ours["ratio_vs_dino"] == pytest.approx((ratios[0] + ratios[1]) / 2, rel=1e-2)
    times = [f / o for o, f in zip(rounds["pretrain_views"], rounds["decode_crop"])]
    assert ours["time_vs_decode_crop"] == pytest.approx((times[0] + times[1]) / 2, rel=1e-2)
    assert by["step"]["images_per_s"] > 0 and by["step"]["gflop_per_image"] > 0
    whole = by["whole"]
    assert whole["iterations"] == 2 and whole["untimed_iterations"] == 4  # 1 worker x 4 queued
    summary = by["summary"]
    assert summary["loader_images_per_s"] == ours["per_core"]
    assert summary["step_images_per_s"] == by["step"]["images_per_s"]
    assert summary["whole_images_per_s"] == whole["images_per_s"]
    assert summary["bound"] == (
        "loader" if ours["per_core"] < by["step"]["images_per_s"] else "step"
    )
    assert [json.loads(l) for l in out.read_text().splitlines()] == printed
    assert "ours / DINO" in captured.err and "bound:" in captured.err


def test_bench_data_times_whatever_the_views_are(tmp_path, photos_root, capsys, monkeypatch):
    """The loader side measures PretrainViews as it is: here uint8 views, as the device
    photometric mode will hand them over, go through unchanged."""
    import torch

    import folk.data.transforms as transforms

    calls = []

    class ByteViews:
        n_views = 2

        def __init__(self, cfg):
            self.size = cfg["model"]["img_size"]

        def __call__(self, img):
            calls.append(img.size)
            return [torch.zeros(3, self.size, self.size, dtype=torch.uint8)] * 2

    monkeypatch.setattr(transforms, "PretrainViews", ByteViews)
    argv = [
        "bench",
        "--data",
        "--config",
        str(PHOTOS_PARAMS),
        "--rounds",
        "1",
        "--images",
        "3",
        "--batch-size",
        "2",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--iterations",
        "0",
    ] + _sets(DATA_TINY + [f"data.root={photos_root}"])
    assert main(argv) == 0
    printed = [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.startswith("{")]
    assert [r["measure"] for r in printed] == ["loader"] * 4 + ["step", "summary"]
    from folk.benchmark.input_path import LOADER_WARMUP_IMAGES

    # the timed images and the warm-up's; photographs, decoded
    assert len(calls) == 3 + LOADER_WARMUP_IMAGES
    assert set(calls) == {(500, 375)}


def test_bench_data_refuses_several_variants(photos_root, capsys):
    argv = [
        "bench",
        "--data",
        "--config",
        str(PHOTOS_PARAMS),
        "--variants",
        "folk,mfm",
        "--set",
        f"data.root={photos_root}",
    ]
    assert main(argv) == 2
    assert "one variant" in capsys.readouterr().err


def test_workflow_records_the_input_path_beside_the_step(tmp_path):
    from test_workflow import copy_workflow, dry_run_jobs, snakemake, write_params

    wf = copy_workflow(tmp_path / "wf")
    write_params(wf / "params" / "bench.yaml", {"workflow": {"bench": True}}, "test_tiny.yaml")
    res = snakemake(wf, "-n", "-p", "--configfile", "params/bench.yaml")
    assert res.returncode == 0, res.stderr[-2000:]
    jobs = {j["rule"]: j for j in dry_run_jobs(res.stdout)}
    data = jobs["bench_data"]
    assert data["input"] == ["data/fashion_mnist/manifest.json"]
    assert "folk bench --data --config params/bench.yaml" in data["shell"]
    assert "--variants folk " in data["shell"]
    assert "--out runs/test_tiny/bench_data.jsonl" in data["shell"]
    assert "runs/test_tiny/bench.jsonl" in jobs["bench"]["shell"]
    assert {"runs/test_tiny/bench.jsonl", "runs/test_tiny/bench_data.jsonl"} <= set(
        jobs["report"]["input"]
    )


def test_dino_reference_on_one_channel_images():
    """Fashion-MNIST (the demo's data) is grey: DINO's colour operations leave it grey and
    the views keep one channel, so the workflow's data bench runs on it too."""
    from PIL import Image

    from folk.benchmark.input_path import DinoReference
    from folk.config import load_config

    cfg = load_config(REPO / "params" / "demo.yaml")
    assert cfg["data"]["in_chans"] == 1 and cfg["model"]["img_size"] == 32
    views = DinoReference(cfg)(Image.new("L", (28, 28), 128))
    assert [v.shape for v in views] == [(1, 32, 32)] * 2


def test_bench_data_on_fashion_mnist_without_workers(fashion_root, capsys):
    """The demo's data (grey, 28 px, held in memory) with data.num_workers 0: the loader
    runs between the steps, and the summary adds the two times up."""
    from conftest import tiny_overrides

    argv = [
        "bench",
        "--data",
        "--rounds",
        "1",
        "--images",
        "4",
        "--batch-size",
        "4",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--iterations",
        "1",
    ] + _sets(
        tiny_overrides(fashion_root) + ["data.in_chans=1", "data.mean=[0.286]", "data.std=[0.353]"]
    )
    assert main(argv) == 0
    printed = [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.startswith("{")]
    summary = printed[-1]
    assert summary["measure"] == "summary" and summary["num_workers"] == 0
    assert summary["dataset"] == "fashion_mnist"
    loader, step = summary["loader_images_per_s"], summary["step_images_per_s"]
    assert summary["expected_images_per_s"] == pytest.approx(1 / (1 / loader + 1 / step), rel=1e-2)


def test_bench_data_whole_path_with_the_split_on_the_device(fashion_root, capsys):
    """data.on_device: the engine's loader is the split held on the device; the whole path
    runs through it (no workers, no prefetch queue), and --compile reaches the engine as
    pretrain.compile: on (not a boolean the key does not take)."""
    from conftest import tiny_overrides

    import folk.engine.pretrain as engine

    argv = [
        "bench",
        "--data",
        "--rounds",
        "1",
        "--images",
        "4",
        "--batch-size",
        "4",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--iterations",
        "2",
    ] + _sets(
        tiny_overrides(fashion_root)
        + [
            "data.in_chans=1",
            "data.mean=[0.286]",
            "data.std=[0.353]",
            "augment.photometric=device",
            "data.on_device=true",
        ]
    )
    assert main(argv) == 0
    whole = next(
        json.loads(l)
        for l in capsys.readouterr().out.splitlines()
        if l.startswith("{") and '"whole"' in l
    )
    assert whole["iterations"] == 2 and whole["untimed_iterations"] == 0
    assert whole["num_workers"] == 0 and whole["images_per_s"] > 0
    compiled = []
    original = engine.torch.compile
    engine.torch.compile = lambda module, **kw: compiled.append(module) or module
    try:
        assert main(argv + ["--compile", "--iterations", "1"]) == 0
    finally:
        engine.torch.compile = original
    capsys.readouterr()
    # student and teacher twice: the step alone's, then the whole path's trainer's
    assert len(compiled) == 4


def test_bench_times_the_device_augmentation_with_the_step(capsys, monkeypatch):
    """With augment.photometric: device every timed step begins with the batch's
    photometric work (the views it trains on come out of finish_views); with workers, none."""
    import folk.data.transforms as transforms

    calls = []
    real = transforms.finish_views

    def counted(batch, views):
        out = real(batch, views)
        calls.append((len(batch), [tuple(v.shape) for v in out], out[0].dtype))
        return out

    monkeypatch.setattr(transforms, "finish_views", counted)
    args = [
        "bench",
        "--variants",
        "folk",
        "--batch-size",
        "4",
        "--steps",
        "3",
        "--warmup",
        "1",
        "--no-baseline",
        "--set",
        "augment.preset=dino",
        "--set",
        "data.in_chans=3",
        "--set",
        "data.mean=[0.5, 0.5, 0.5]",
        "--set",
        "data.std=[0.2, 0.2, 0.2]",
    ]
    for item in TINY:
        args += ["--set", item]
    for mode, expected in (("workers", 0), ("device", 1 + 3 + 1)):  # warm-up, timed, FLOPs
        calls.clear()
        assert main(args + ["--set", f"augment.photometric={mode}"]) == 0
        record = json.loads(
            next(l for l in capsys.readouterr().out.splitlines() if l.startswith("{"))
        )
        assert record["photometric"] == mode
        assert len(calls) == expected, (mode, len(calls))
        assert all(c == (3, [(4, 3, 32, 32)] * 2, torch.float32) for c in calls)
