"""Pre-training engine: every variant trains, resume equals no interruption, guards hold."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from folk.engine.hooks import stop_after
from folk.engine.pretrain import StopRequested
from folk.training import pretrain
from folk.errors import DataError, NonFiniteLossError, RunDirError
from folk.models import backbone_kwargs
from folk.variants import VARIANTS

from conftest import REPO, tiny_overrides


def backbone_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "backbone.pt", weights_only=True)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_variant_trains_one_step(tiny_cfg, tmp_path, variant):
    cfg = tiny_cfg(f"pretrain.variant={variant}", "pretrain.max_iterations=1")
    done = pretrain(cfg, tmp_path)
    assert done["iterations"] == 1
    rec = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()][0]
    method = cfg["method"]
    assert ("loss_rec" in rec) == method["reconstruction"]
    assert ("loss_kd" in rec) == method["distillation"]
    assert all(
        torch.isfinite(torch.tensor(v)).item() for k, v in rec.items() if k.startswith("loss")
    )


@pytest.mark.parametrize("arch", ["vit_tiny_patch16_224", "resnet50"])
def test_multi_crop_trains_with_local_views_smaller_than_the_model(tiny_cfg, tmp_path, arch):
    import timm

    cfg = tiny_cfg(
        f"model.arch={arch}",
        "augment.local_crops_number=2",
        "augment.local_crops_size=16",
        "pretrain.max_iterations=1",
    )
    done = pretrain(cfg, tmp_path)
    assert done["iterations"] == 1
    rec = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert torch.isfinite(torch.tensor(rec["loss_kd"]))
    plain = {k: v for k, v in backbone_kwargs(cfg).items() if k != "dynamic_img_size"}
    timm.create_model(arch, **plain).load_state_dict(backbone_state(tmp_path))


def test_run_directory_contract(tiny_cfg, tmp_path):
    import timm

    from folk.config import load_run_config
    from folk.models import backbone_kwargs

    cfg = tiny_cfg("pretrain.epochs=1")
    pretrain(cfg, tmp_path)
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "checkpoints/last.pt",
        "backbone.pt",
        "student_backbone.pt",
        "DONE.json",
    ):
        assert (tmp_path / name).is_file(), name
    assert load_run_config(tmp_path) == cfg
    done = json.loads((tmp_path / "DONE.json").read_text())
    for key in (
        "git_sha",
        "versions",
        "device",
        "wall_time_s",
        "images_per_s",
        "peak_memory_mb",
        "skipped_images",
        "iterations",
    ):
        assert key in done
    assert done["iterations"] == 4 and done["skipped_images"] == 0
    model = timm.create_model(cfg["model"]["arch"], **backbone_kwargs(cfg))
    model.load_state_dict(backbone_state(tmp_path))
    records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["type"] == "train"]
    assert [r["iteration"] for r in train] == [1, 2, 3, 4]
    assert {"epoch", "lr", "wd", "momentum", "teacher_temp", "images_per_s"} <= train[0].keys()
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [1]
    # a finished run is not retrained
    mtime = (tmp_path / "backbone.pt").stat().st_mtime_ns
    assert pretrain(cfg, tmp_path) == {}
    assert (tmp_path / "backbone.pt").stat().st_mtime_ns == mtime


def released_backbone_snippet() -> str:
    """The loading snippet of docs/api.md, "Released backbones": the first Python block of
    that section, as a user copies it."""
    text = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    section = text.split("\n## Released backbones\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("\n```", 1)[0]


def test_the_backbone_is_also_released_as_safetensors_that_timm_loads(tiny_cfg, tmp_path):
    pretrain(tiny_cfg("pretrain.epochs=1"), tmp_path)
    path = tmp_path / "backbone.safetensors"
    snippet = released_backbone_snippet()
    example = 'path = "runs/demo/folk/backbone.safetensors"'
    assert example in snippet
    # the snippet as documented, from the header alone, on this run's file
    scope: dict = {}
    exec(snippet.replace(example, f"path = {str(path)!r}"), scope)
    model, meta = scope["model"], scope["meta"]
    weights = backbone_state(tmp_path)
    assert set(model.state_dict()) == set(weights)
    for name, value in model.state_dict().items():
        assert torch.equal(value, weights[name]), name
    assert meta["variant"] == "folk" and meta["format"] == "pt"


def test_resume_after_kill_equals_uninterrupted(tiny_cfg, tmp_path):
    cfg = tiny_cfg()  # 2 epochs x 4 iterations, checkpoint every 2
    pretrain(cfg, tmp_path / "straight")
    with pytest.raises(StopRequested):
        pretrain(cfg, tmp_path / "killed", hooks=[stop_after(5)])  # dies after iteration 5
    state = torch.load(tmp_path / "killed/checkpoints/last.pt", weights_only=True)
    assert state["iteration"] == 4  # iteration 5 was never checkpointed: it is redone
    pretrain(cfg, tmp_path / "killed")
    assert_same_weights(backbone_state(tmp_path / "straight"), backbone_state(tmp_path / "killed"))
    lines = lambda p: [
        {k: v for k, v in json.loads(l).items() if k not in ("time", "images_per_s")}
        for l in (p / "metrics.jsonl").read_text().splitlines()
    ]
    assert lines(tmp_path / "straight") == lines(tmp_path / "killed")


def _start(run_dir: Path, fashion_root: Path, *extra: str) -> subprocess.Popen:
    overrides = tiny_overrides(fashion_root) + [
        "pretrain.epochs=6",
        "pretrain.checkpoint_every=1",
        *extra,
    ]
    cmd = [
        sys.executable,
        "-m",
        "folk.cli",
        "pretrain",
        "--out",
        str(run_dir),
        "--config",
        str(REPO / "folk/config/defaults.yaml"),
    ]
    for item in overrides:
        cmd += ["--set", item]
    return subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for_checkpoint(run_dir: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not (run_dir / "checkpoints/last.pt").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.2)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_signal_then_resume_equals_uninterrupted(fashion_root, tmp_path, sig):
    straight = _start(tmp_path / "straight", fashion_root)
    interrupted = _start(tmp_path / "interrupted", fashion_root)
    _wait_for_checkpoint(tmp_path / "interrupted", interrupted)
    interrupted.send_signal(sig)
    _, err = interrupted.communicate(timeout=120)
    if sig == signal.SIGTERM:
        assert interrupted.returncode == 128 + signal.SIGTERM, err
        assert "checkpoint written" in err
    else:
        assert interrupted.returncode == -signal.SIGKILL
    assert not (tmp_path / "interrupted/DONE.json").exists()
    state = torch.load(tmp_path / "interrupted/checkpoints/last.pt", weights_only=True)
    assert 0 < state["iteration"] < 24
    resumed = _start(tmp_path / "interrupted", fashion_root)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resumed from" in err
    assert straight.wait(timeout=300) == 0
    assert_same_weights(
        backbone_state(tmp_path / "straight"), backbone_state(tmp_path / "interrupted")
    )


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_cfg, tmp_path, monkeypatch):
    from folk.engine import step

    original = step.FolkObjective.forward
    calls = {"n": 0}

    def poisoned(self, views, teacher_temp, generator):
        loss, terms = original(self, views, teacher_temp, generator)
        calls["n"] += 1
        if calls["n"] == 4:  # iteration index 3
            terms["loss_rec"] = terms["loss_rec"] * float("nan")
            loss = loss * float("nan")
        return loss, terms

    monkeypatch.setattr(step.FolkObjective, "forward", poisoned)
    cfg = tiny_cfg("pretrain.log_every=4", "pretrain.checkpoint_every=2")
    with pytest.raises(NonFiniteLossError, match=r"loss_rec = nan at iteration 3") as err:
        pretrain(cfg, tmp_path)
    assert "last good checkpoint" in str(err.value)
    state = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
    assert state["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in state["student"].values())


def test_missing_data_fails_at_once_naming_the_path(tmp_path):
    from folk.config import load_config

    missing = tmp_path / "no-such-dir"
    cfg = load_config(None, tiny_overrides(missing))
    with pytest.raises(DataError, match=str(missing)):
        pretrain(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_resume_with_a_different_configuration_is_refused(tiny_cfg, tmp_path):
    with pytest.raises(StopRequested):
        pretrain(tiny_cfg(), tmp_path, hooks=[stop_after(2)])
    with pytest.raises(RunDirError, match=r"pretrain.base_lr"):
        pretrain(tiny_cfg("pretrain.base_lr=0.1"), tmp_path)


# mfm on resnet18: the monitor's feature pass switches a CPU ResNet's layout
# (inference_layout) between training iterations, and without a teacher it reads the
# student, whose weights must come back trainable
@pytest.mark.parametrize("arch,variant", [("vit_tiny_patch16_224", "folk"), ("resnet18", "mfm")])
def test_knn_monitor_logs_initialisation_and_each_epoch(tiny_cfg, tmp_path, arch, variant):
    cfg = tiny_cfg(
        f"model.arch={arch}",
        f"pretrain.variant={variant}",
        "pretrain.knn_every=1",
        "pretrain.knn_train_images=30",
        "pretrain.knn_test_images=20",
    )
    pretrain(cfg, tmp_path)
    records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    knn = [r for r in records if r["type"] == "knn"]
    assert [r["epoch"] for r in knn] == [0, 1, 2]
    assert [r["iteration"] for r in knn] == [0, 4, 8]
    assert all(0 <= r["knn_top1"] <= 100 and r["k"] == 20 for r in knn)


def test_zero_epochs_writes_the_initialisation_of_the_same_seed(tiny_cfg, tmp_path):
    knn = ["pretrain.knn_every=1", "pretrain.knn_train_images=30", "pretrain.knn_test_images=20"]
    init_dir, trained_dir = tmp_path / "init", tmp_path / "trained"
    done = pretrain(tiny_cfg(*knn, "pretrain.epochs=0"), init_dir)
    assert done["iterations"] == 0 and done["final_loss"] is None
    pretrain(tiny_cfg(*knn, "pretrain.epochs=1"), trained_dir)

    def knn_records(run_dir):
        return [
            json.loads(l)
            for l in (run_dir / "metrics.jsonl").read_text().splitlines()
            if json.loads(l)["type"] == "knn"
        ]

    # the random-init baseline: the weights a training run of that seed starts from
    from folk.engine.pretrain import Pretrainer
    from folk.evals.monitor import knn_monitor

    start = Pretrainer(
        tiny_cfg(*knn, "pretrain.epochs=1"), tmp_path / "unused", monitor=knn_monitor
    )
    start.setup()
    assert_same_weights(backbone_state(init_dir), start.teacher.backbone.state_dict())
    init_records = knn_records(init_dir)
    assert init_records == knn_records(trained_dir)[:1]
    init, trained = backbone_state(init_dir), backbone_state(trained_dir)
    assert init.keys() == trained.keys()
    assert any(not torch.equal(init[k], trained[k]) for k in init)
    assert not (init_dir / "checkpoints" / "last.pt").exists()


@pytest.mark.parametrize(
    "batch, world, accum, most, want",
    [
        (2048, 1, 1, 256, (256, 8)),  # paper batch on one GPU: 8 steps of 256
        (2048, 8, 1, 256, (256, 1)),  # on 8 GPUs: none
        (2048, 16, 1, 256, (128, 1)),
        (96, 1, 1, 40, (32, 3)),  # the fewest steps that split evenly: 3 x 32, not 48
        (64, 2, 2, 256, (16, 2)),  # at least accum_steps
        (10, 1, 1, 3, (2, 5)),
    ],
)
def test_micro_batching_splits_the_global_batch(batch, world, accum, most, want):
    from folk.engine.pretrain import micro_batching

    micro, steps = micro_batching(batch, world, accum, most)
    assert (micro, steps) == want
    assert micro * steps * world == batch and micro <= most and steps >= accum
    # no smaller number of steps would do
    assert not any(
        batch % (world * s) == 0 and batch // (world * s) <= most for s in range(accum, steps)
    )


def test_micro_batching_refuses_what_cannot_be_split():
    from folk.engine.pretrain import micro_batching

    with pytest.raises(RunDirError, match="smaller than world size"):
        micro_batching(4, 8, 1, 256)
    with pytest.raises(RunDirError, match="cannot be split evenly"):
        micro_batching(10, 3, 1, 256)


def test_a_derived_accumulation_trains_as_the_same_accumulation_set_by_hand(tiny_cfg, tmp_path):
    """Batch 16 with at most 4 images per forward is 4 accumulated micro-batches: bitwise
    the run of pretrain.accum_steps = 4."""
    derived = tiny_cfg("pretrain.max_micro_batch=4", "pretrain.max_iterations=3")
    by_hand = tiny_cfg("pretrain.accum_steps=4", "pretrain.max_iterations=3")
    pretrain(derived, tmp_path / "derived")
    pretrain(by_hand, tmp_path / "by_hand")
    assert_same_weights(backbone_state(tmp_path / "derived"), backbone_state(tmp_path / "by_hand"))
