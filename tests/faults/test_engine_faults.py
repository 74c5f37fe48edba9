"""Fault injection for the pre-training engine: a stop at any moment, undecodable batches,
divergence, damaged records and stale finished markers. Each test compares with an
uninterrupted run of the same configuration, or with what the configuration implies."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from folk.config import load_config
from folk.engine.hooks import stop_after
from folk.engine.pretrain import Pretrainer, StopRequested
from folk.training import pretrain
from folk.errors import NonFiniteLossError, RunDirError

from conftest import tiny_overrides


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The runs are tiny and the two cores shared. Module-wide and first: a run and its
    reference must use the same thread count, or their reductions may differ in the last bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TIMING = ("time", "images_per_s")
# 2 epochs x 4 iterations; drop path is live (depth 2: timm's rates are linspace(0, p, depth));
# a checkpoint every 3 iterations, so the end of epoch 1 (iteration 4) is not one of them
BOUNDARY_RUN = (
    "model.depth=2",
    "model.drop_path=0.5",
    "pretrain.checkpoint_every=3",
    "pretrain.knn_every=1",
    "pretrain.knn_train_images=30",
    "pretrain.knn_test_images=20",
)


def records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def weights(run_dir: Path) -> dict:
    return {
        name: torch.load(run_dir / name, weights_only=True)
        for name in ("backbone.pt", "student_backbone.pt")
    }


def assert_same_run(a: Path, b: Path) -> None:
    assert records(a) == records(b)
    wa, wb = weights(a), weights(b)
    for name in wa:
        assert wa[name].keys() == wb[name].keys()
        for key in wa[name]:
            assert torch.equal(wa[name][key], wb[name][key]), f"{name}: {key} differs"
    done_a, done_b = (json.loads((d / "DONE.json").read_text()) for d in (a, b))
    for key in ("iterations", "skipped_images", "final_loss"):
        assert done_a[key] == done_b[key], key


def floating_tensors(tree, name=""):
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point():
            yield name, tree
    elif isinstance(tree, dict):
        for k, v in tree.items():
            yield from floating_tensors(v, f"{name}.{k}")
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from floating_tensors(v, f"{name}.{i}")


@pytest.fixture(scope="module")
def reference(fashion_root, tmp_path_factory):
    """Uninterrupted runs, one per configuration, shared by the tests of this module."""
    made: dict[tuple, Path] = {}

    def get(*extra: str) -> Path:
        if extra not in made:
            run_dir = tmp_path_factory.mktemp("reference") / "run"
            pretrain(load_config(None, tiny_overrides(fashion_root) + list(extra)), run_dir)
            made[extra] = run_dir
        return made[extra]

    return get


# ------------------------------------------------------------------ 1. a stop at any moment


class Killed(Exception):
    """Stands for a SIGKILL: nothing after it runs."""


def _sigterm_during(monkeypatch, iteration: int) -> None:
    original = Pretrainer._train_iteration

    def step(self, micro, epoch):
        if self.iteration == iteration:
            os.kill(os.getpid(), signal.SIGTERM)  # handled at the end of this step
        return original(self, micro, epoch)

    monkeypatch.setattr(Pretrainer, "_train_iteration", step)


def _monitor_dies_at_epoch(monkeypatch, epoch: int) -> None:
    from folk.evals import monitor

    original, calls = monitor.knn_monitor, []

    def dying(cfg, backbone):
        calls.append(1)
        if len(calls) == epoch + 1:  # the first call is the initialisation's (epoch 0)
            raise Killed
        return original(cfg, backbone)

    monkeypatch.setattr(monitor, "knn_monitor", dying)


@pytest.mark.parametrize(
    "how, at, resumed_at",
    [
        ("stop_after", 4, 4),  # the end of epoch 1: after its last step, not a checkpoint_every one
        ("stop_after", 8, 8),  # the end of the run
        ("stop_after", 5, 4),  # mid-epoch: iteration 5 is redone from the end of epoch 1
        ("stop_after", 7, 6),  # mid-epoch: iteration 7 is redone from a mid-epoch checkpoint
        ("sigterm", 3, 4),  # SIGTERM during the last step of epoch 1
        ("monitor", 1, None),  # killed while the k-NN monitor of epoch 1 runs
    ],
)
def test_stop_at_any_moment_then_resume_equals_uninterrupted(
    tiny_cfg, reference, tmp_path, monkeypatch, how, at, resumed_at
):
    cfg = tiny_cfg(*BOUNDARY_RUN)
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        if how == "sigterm":
            _sigterm_during(patch, at)
        if how == "monitor":
            _monitor_dies_at_epoch(patch, at)
        with pytest.raises((StopRequested, Killed)):
            pretrain(cfg, run_dir, hooks=[stop_after(at)] if how == "stop_after" else ())
    if resumed_at is not None:  # the checkpoints of the configuration: every 3, epoch ends
        state = torch.load(run_dir / "checkpoints/last.pt", weights_only=True)
        assert state["iteration"] == resumed_at
    assert not (run_dir / "DONE.json").exists()
    pretrain(cfg, run_dir)
    assert_same_run(reference(*BOUNDARY_RUN), run_dir)
    kinds = [(r["type"], r["epoch"]) for r in records(run_dir) if r["type"] != "train"]
    assert kinds == [("knn", 0), ("epoch", 1), ("knn", 1), ("epoch", 2), ("knn", 2)]


# ------------------------------------------------------------------ 2. undecodable batches


def _image_folder(root: Path, classes: int = 4, per_class: int = 8) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for k in range(per_class):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{k}.png")


@pytest.fixture(scope="module")
def bad_batch(fashion_root, tmp_path_factory):
    """32 images, batches of 8 (4 iterations an epoch, 2 epochs); every image of the
    second batch of epoch 0 undecodable. Gives the configuration and its uninterrupted run."""
    from folk.data import build_dataset
    from folk.engine.data import EpochSampler

    root = tmp_path_factory.mktemp("folder")
    _image_folder(root)
    cfg = load_config(
        None,
        tiny_overrides(fashion_root)
        + [
            "data.dataset=imagefolder",
            f"data.root={root}",
            "data.num_classes=4",
            "data.train_subset=0",
            "data.test_subset=0",
            "pretrain.batch_size=8",
            "pretrain.checkpoint_every=1",
        ],
    )
    paths = build_dataset(cfg, "train").paths
    sampler = EpochSampler(len(paths), len(paths), 0, 1, cfg["experiment"]["seed"])
    sampler.set_epoch(0)
    for _, index in list(sampler)[8:16]:
        Path(paths[index]).write_bytes(b"\x89PNG not an image")
    straight = root / "straight"
    return cfg, straight, pretrain(cfg, straight)


def test_a_batch_of_only_undecodable_images_is_skipped(bad_batch):
    _, straight, done = bad_batch
    # 8 bad images, each drawn once an epoch; the all-bad iteration (the 2nd) makes no step
    assert done["iterations"] == 8 and done["skipped_images"] == 2 * 8
    assert [r["iteration"] for r in records(straight) if r["type"] == "train"] == [
        1,
        3,
        4,
        5,
        6,
        7,
        8,
    ]


def test_undecodable_batches_do_not_shift_the_resume_position(bad_batch, tmp_path):
    """Resumed just after the all-bad batch: iteration 3 must read the third batch, as the
    uninterrupted run did (a replacement batch drawn in its place would shift every later one)."""
    cfg, straight, _ = bad_batch
    with pytest.raises(StopRequested):
        pretrain(cfg, tmp_path, hooks=[stop_after(2)])
    pretrain(cfg, tmp_path)
    assert_same_run(straight, tmp_path)


def _host_min_worker(rank, init_file, results):
    import torch.distributed as dist

    from folk.engine.distributed import host_min

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    results[rank] = host_min([8, 0, 5] if rank == 0 else [3, 8, 0])
    dist.destroy_process_group()


def test_ranks_agree_on_the_batches_left_out(tmp_path):
    """Decodable images per micro-batch, per rank: a micro-batch is left out on every rank
    when one rank has none of it (DDP: a rank missing from a backward hangs the others)."""
    import torch.multiprocessing as mp

    results = mp.Manager().dict()
    mp.spawn(_host_min_worker, args=(str(tmp_path / "init"), results), nprocs=2)
    assert results[0] == results[1] == [3, 0, 0]


# ------------------------------------------------------------------ 3. the last good checkpoint


def _named_checkpoint_exists(message: str) -> bool:
    named = re.search(r"last good checkpoint (\S+)", message)
    return named is not None and Path(named.group(1)).is_file()


def _poison_student_logits(monkeypatch, iteration: int) -> None:
    """The student's DINO logits turn nan at ``iteration``: loss_kd and its diagnostics
    (kd_kl, ...) go nan; loss_rec stays finite."""
    from folk.losses import DistillationLoss

    original, calls = DistillationLoss.forward, []

    def poisoned(self, student_out, teacher_out, teacher_temp):
        calls.append(1)
        if len(calls) == iteration + 1:
            student_out = [s * float("nan") for s in student_out]
        return original(self, student_out, teacher_out, teacher_temp)

    monkeypatch.setattr(DistillationLoss, "forward", poisoned)


def test_non_finite_loss_names_the_term_the_iteration_and_an_existing_checkpoint(
    tiny_cfg, tmp_path, monkeypatch
):
    _poison_student_logits(monkeypatch, 3)
    with pytest.raises(NonFiniteLossError) as err:
        pretrain(tiny_cfg("pretrain.checkpoint_every=2"), tmp_path)
    message = str(err.value)
    assert re.match(r"loss_kd = nan at iteration 3\b", message), message
    assert _named_checkpoint_exists(message), message
    state = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
    assert state["iteration"] == 2


def test_divergence_before_any_checkpoint_names_no_checkpoint(tiny_cfg, tmp_path, monkeypatch):
    _poison_student_logits(monkeypatch, 0)
    with pytest.raises(NonFiniteLossError) as err:
        pretrain(tiny_cfg(), tmp_path)
    message = str(err.value)
    assert message.startswith("loss_kd = nan at iteration 0"), message
    assert not (tmp_path / "checkpoints/last.pt").exists()
    assert "last good checkpoint" not in message and "does not exist" in message, message


class InfiniteGradient(torch.autograd.Function):
    """Adds 0 to the loss; its backward is inf: a gradient that overflows under a finite loss."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.new_zeros(())

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.full_like(x, float("inf"))


def test_a_checkpoint_never_holds_non_finite_state(tiny_cfg, tmp_path, monkeypatch):
    """The gradient of iteration 3 overflows while its loss is finite: the update makes the
    weights non-finite, and no loss is computed with them before the checkpoint of 4."""
    from folk.engine import step

    original, calls = step.FolkObjective.forward, []

    def overflowing(self, views, teacher_temp, generator):
        loss, terms = original(self, views, teacher_temp, generator)
        calls.append(1)
        if len(calls) == 4:  # iteration 3
            weight = next(self.student.parameters())
            loss = loss + InfiniteGradient.apply(weight)
        return loss, terms

    monkeypatch.setattr(step.FolkObjective, "forward", overflowing)
    with pytest.raises(NonFiniteLossError) as err:
        pretrain(tiny_cfg("pretrain.checkpoint_every=2"), tmp_path)
    state = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
    tensors = dict(floating_tensors(state))
    assert any(k.startswith(".optimizer.state") for k in tensors)
    for name, tensor in tensors.items():
        assert torch.isfinite(tensor).all(), f"{name} is not finite in last.pt"
    assert state["iteration"] == 2
    message = str(err.value)
    assert "after iteration 3" in message and _named_checkpoint_exists(message), message


# ------------------------------------------------------------------ 5. records are kept


def test_reader_skips_and_reports_a_damaged_line(tmp_path, caplog):
    from folk.utils.io import read_jsonl

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3, "b\n{"a": 4}\n[5]\n{"a": 6}\n')
    with caplog.at_level(logging.WARNING):
        assert read_jsonl(path) == [{"a": 1}, {"a": 2}, {"a": 4}, {"a": 6}]
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert f"{path} line 3" in warned and f"{path} line 5" in warned, warned


def test_bench_reader_keeps_the_records_after_a_damaged_line(tmp_path, caplog):
    from folk.report.collect import collect_bench

    bench = tmp_path / "exp" / "bench.jsonl"
    bench.parent.mkdir()
    record = {"type": "bench", "variant": "folk", "arch": "vit", "device": "cpu"}
    bench.write_text(
        "".join(json.dumps({**record, "images_per_s": n}) + "\n" for n in (1, 2))
        + '{"type": "bench", "vari\n'
        + json.dumps({**record, "images_per_s": 3})
        + "\n"
    )
    with caplog.at_level(logging.WARNING):
        found = collect_bench(tmp_path)
    assert [b.record["images_per_s"] for b in found] == [1, 2, 3]
    assert any(f"{bench} line 3" in r.getMessage() for r in caplog.records)


def test_an_append_after_a_torn_last_line_keeps_the_new_record(tmp_path):
    """A writer killed mid-line leaves no newline at the end: the next record (metrics or
    bench) goes on a line of its own instead of being glued onto the torn one."""
    from folk.utils.io import append_jsonl, read_jsonl_lines

    path = tmp_path / "bench.jsonl"
    path.write_text(json.dumps({"n": 1}) + "\n" + '{"n": 2, "tor')
    append_jsonl(path, {"n": 3})
    records, damaged = read_jsonl_lines(path)
    assert records == [{"n": 1}, {"n": 3}]
    assert [number for number, _ in damaged] == [2]
    append_jsonl(tmp_path / "new.jsonl", {"n": 4})  # an empty file gets no blank first line
    assert (tmp_path / "new.jsonl").read_text() == '{"n": 4}\n'


def test_resume_keeps_every_record_but_a_damaged_one(tiny_cfg, reference, tmp_path, caplog):
    cfg = tiny_cfg(*BOUNDARY_RUN)
    run_dir = tmp_path / "run"
    with pytest.raises(StopRequested):
        pretrain(cfg, run_dir, hooks=[stop_after(5)])  # checkpoint of iteration 4; 5 is redone
    metrics = run_dir / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    assert json.loads(lines[2])["iteration"] == 2  # after the k-NN record and iteration 1
    damaged = lines[2][: len(lines[2]) // 2]  # torn in the middle of the file
    metrics.write_text("\n".join(lines[:2] + [damaged] + lines[3:]) + "\n")
    with caplog.at_level(logging.WARNING):
        pretrain(cfg, run_dir)
    expected = records(reference(*BOUNDARY_RUN))
    del expected[2]
    assert records(run_dir) == expected
    aside = run_dir / "metrics.jsonl.damaged"
    assert aside.read_text() == damaged + "\n"
    assert any(
        f"{metrics} line 3:" in r.getMessage() and str(aside) in r.getMessage()
        for r in caplog.records
    )


# ------------------------------------------------------------------ 6. finished markers


def test_a_finished_run_with_another_identity_is_refused(tiny_cfg, tmp_path):
    pretrain(tiny_cfg("pretrain.max_iterations=1"), tmp_path)
    assert (tmp_path / "DONE.json").is_file()
    with pytest.raises(
        RunDirError,
        match=r"pretrain\.base_lr: .* -> 0\.1.*config\.yaml|"
        r"config\.yaml.*pretrain\.base_lr: .* -> 0\.1",
    ):
        pretrain(tiny_cfg("pretrain.max_iterations=1", "pretrain.base_lr=0.1"), tmp_path)
    # a key that does not change what is trained: still the finished run
    assert pretrain(tiny_cfg("pretrain.max_iterations=1", "pretrain.log_every=5"), tmp_path) == {}


def test_a_finished_marker_that_is_not_json_is_refused(tiny_cfg, tmp_path):
    cfg = tiny_cfg("pretrain.max_iterations=1")
    pretrain(cfg, tmp_path)
    (tmp_path / "DONE.json").write_text('{"iterations": ')
    with pytest.raises(RunDirError, match=re.escape(str(tmp_path / "DONE.json"))):
        pretrain(cfg, tmp_path)
