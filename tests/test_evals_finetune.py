"""Fine-tuning evaluation: the classifier built on the backbone, layer-wise lr decay, the
RandAugment/Pillow fix, ``folk eval finetune`` end to end, and resume-after-interruption
being bitwise equal to an uninterrupted run (tiny ViT, real Fashion-MNIST, CPU)."""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import RGB_STATS, TINY_VIT, tiny_overrides

LOG = logging.getLogger("test.evals.finetune")
# 64 training images, batch 16: 4 optimiser steps per epoch
FAST = [
    "eval.finetune.batch_size=16",
    "eval.finetune.warmup_epochs=1",
    "eval.finetune.checkpoint_every=3",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def make_run_dir(path: Path, root: Path, *extra: str) -> Path:
    """A run directory as `folk pretrain` leaves it, with a randomly initialised backbone."""
    from folk.config import load_config, save_config
    from folk.models import build_backbone

    path.mkdir(parents=True)
    cfg = load_config(None, tiny_overrides(root) + RGB_STATS + TINY_VIT + list(extra))
    save_config(cfg, path / "config.yaml")
    torch.manual_seed(0)
    torch.save(build_backbone(cfg).state_dict(), path / "backbone.pt")
    return path


@pytest.fixture(scope="module")
def run_dir(fashion_root, tmp_path_factory) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("ft") / "run", fashion_root)


def eval_cfg(run_dir: Path, *overrides: str) -> dict:
    from folk.config import eval_config

    return eval_config(run_dir, None, list(overrides))


# ---------------------------------------------------------------- the classifier


def test_mean_pooling_classifier_matches_explicit_computation(run_dir):
    from folk.evals.finetune import make_classifier
    from folk.models import load_backbone

    backbone, cfg = load_backbone(run_dir, "teacher")
    model = make_classifier(backbone, 10, "avg").eval()
    assert isinstance(model.norm, torch.nn.Identity)
    assert torch.equal(model.fc_norm.weight, torch.ones(32))  # fresh LayerNorm
    assert model.head.weight.abs().max() < 1e-3  # small initial head (std 2e-5)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        tokens = model.forward_features(x)  # (B, 1 + 64 patches, D), no final norm now
        assert tokens.shape == (3, 1 + (32 // 4) ** 2, 32)
        pooled = tokens[:, 1:].mean(dim=1)  # mean of the patch tokens, CLS left out
        mu = pooled.mean(-1, keepdim=True)
        var = pooled.var(-1, unbiased=False, keepdim=True)
        normed = (pooled - mu) / torch.sqrt(var + model.fc_norm.eps)
        want = normed @ model.head.weight.T + model.head.bias
        torch.testing.assert_close(model(x), want, rtol=1e-5, atol=1e-6)


def test_classifier_state_loads_into_plain_timm_mean_pool_vit(run_dir):
    """classifier.pt's layout is timm's own global_pool='avg' ViT (fc_norm after the pool)."""
    import timm

    from folk.evals.finetune import make_classifier
    from folk.models import backbone_kwargs, load_backbone

    backbone, cfg = load_backbone(run_dir, "teacher")
    state = make_classifier(backbone, 10, "avg").state_dict()
    kwargs = backbone_kwargs(cfg) | {"num_classes": 10, "global_pool": "avg"}
    plain = timm.create_model(cfg["model"]["arch"], **kwargs)
    plain.load_state_dict(state, strict=True)


def test_layer_decay_scales_per_block(run_dir):
    """Every parameter's lr scale is layer_decay ** (num_layers - 1 - layer_id), with the
    layer ids worked out by hand: embeddings 0, block i i+1, pool norm and head last."""
    from timm.scheduler import CosineLRScheduler

    from folk.evals.finetune import build_optimizer, make_classifier
    from folk.models import load_backbone

    backbone, cfg = load_backbone(run_dir, "teacher")
    model = make_classifier(backbone, 10, "avg")
    depth, decay, lr, wd = 2, 0.5, 1e-3, 0.05
    optimizer = build_optimizer(model, lr, wd, decay)
    num_layers = depth + 2

    def layer_id(name: str) -> int:
        if name in ("cls_token", "pos_embed") or name.startswith("patch_embed."):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        assert name.startswith(("fc_norm.", "head.")), name
        return num_layers - 1

    names = {id(p): n for n, p in model.named_parameters()}
    seen = set()
    for group in optimizer.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            seen.add(name)
            assert group["lr_scale"] == pytest.approx(
                decay ** (num_layers - 1 - layer_id(name))
            ), name
            no_decay = p.ndim <= 1 or name in ("cls_token", "pos_embed")
            assert group["weight_decay"] == (0.0 if no_decay else wd), name
    assert seen == set(names.values())
    # the scheduler applies the scale: after warm-up every group runs at lr * scale
    sched = CosineLRScheduler(
        optimizer,
        t_initial=10,
        lr_min=0.0,
        warmup_t=5,
        warmup_lr_init=0.0,
        warmup_prefix=True,
        t_in_epochs=False,
    )
    sched.step_update(num_updates=5)
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(lr * group["lr_scale"])


def test_posterize_at_full_magnitude_does_not_crash():
    """Pillow 13 rejects posterize(bits=0), which RandAugment 'inc' draws at magnitude
    10; the pipeline must give the old result (a black image) instead of an error."""
    from PIL import Image, ImageOps

    from folk.config import load_config
    from folk.evals.finetune import _posterize_compat, train_transform

    img = Image.fromarray((np.arange(28 * 28) % 256).astype(np.uint8).reshape(28, 28)).convert(
        "RGB"
    )
    assert np.asarray(_posterize_compat(img, 0)).max() == 0
    assert np.array_equal(
        np.asarray(_posterize_compat(img, 3)), np.asarray(ImageOps.posterize(img, 3))
    )
    cfg = load_config(
        None,
        [
            "model.img_size=32",
            "eval.finetune.auto_augment=rand-m10-mstd0-n3-inc1",
            "eval.finetune.reprob=0",
        ],
    )
    transform = train_transform(cfg)
    random.seed(0)  # RandAugment draws from python's and numpy's global RNGs
    np.random.seed(0)
    for _ in range(60):
        out = transform(img)
        assert out.shape == (3, 32, 32) and torch.isfinite(out).all()


# ---------------------------------------------------------------- end to end


def test_folk_eval_finetune_end_to_end_and_rerun(run_dir, capsys):
    import timm

    from folk.cli import main
    from folk.data import build_dataset
    from folk.data.transforms import eval_transform
    from folk.models import backbone_kwargs

    args = ["eval", "finetune", "--run", str(run_dir), "--set", "eval.finetune.epochs=1"]
    args += [a for item in FAST for a in ("--set", item)]
    assert main(args) == 0
    out_dir = run_dir / "eval" / "finetune"
    record = json.loads((out_dir / "metrics.json").read_text())
    assert record["task"] == "finetune" and record["primary"] == "top1"
    assert record["split"] == "test" and record["epochs"] == 1
    assert set(record["metrics"]) == {"top1", "top5"}
    assert not (out_dir / "checkpoint.pt").exists()  # removed once the result is written

    # the reported accuracy, recomputed with a plain timm model and an explicit loop
    cfg = eval_cfg(run_dir)
    state = torch.load(out_dir / "classifier.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    model = timm.create_model(
        cfg["model"]["arch"], **(backbone_kwargs(cfg) | {"num_classes": 10, "global_pool": "avg"})
    ).eval()
    model.load_state_dict(state)
    test = build_dataset(cfg, "test", transform=eval_transform(cfg))
    hits1 = hits5 = 0
    with torch.no_grad():
        for i in range(len(test)):
            image, label = test[i]
            ranking = model(image[None])[0].argsort(descending=True).tolist()
            hits1 += ranking[0] == label
            hits5 += label in ranking[:5]
    assert record["metrics"]["top1"] == pytest.approx(100.0 * hits1 / len(test))
    assert record["metrics"]["top5"] == pytest.approx(100.0 * hits5 / len(test))

    before = (out_dir / "metrics.json").read_bytes()
    capsys.readouterr()
    assert main(args) == 0
    assert "nothing to do" in capsys.readouterr().err
    assert (out_dir / "metrics.json").read_bytes() == before


def test_resume_after_interruption_equals_uninterrupted(run_dir, tmp_path):
    """Two interruptions (mid-epoch and just after an epoch-end checkpoint), the last part
    with a worker process: the classifier and the accuracy are bitwise those of one run."""
    from folk.engine.hooks import StopRequested, stop_after
    from folk.evals import finetune

    cfg = eval_cfg(run_dir, "eval.finetune.epochs=2", *FAST)
    whole = finetune.train_classifier(cfg, run_dir, tmp_path / "whole", LOG)
    assert whole["iterations"] == 8

    parts = tmp_path / "parts"
    with pytest.raises(StopRequested):  # steps 1-3, checkpoint at 3
        finetune.train_classifier(cfg, run_dir, parts, LOG, hooks=[stop_after(3)])
    ckpt = torch.load(parts / "checkpoint.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["step_in_epoch"], ckpt["step"]) == (0, 3, 3)
    with pytest.raises(StopRequested):  # steps 4-5: epoch end at 4
        finetune.train_classifier(cfg, run_dir, parts, LOG, hooks=[stop_after(2)])
    ckpt = torch.load(parts / "checkpoint.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["step_in_epoch"], ckpt["step"]) == (1, 0, 4)
    cfg["data"]["num_workers"] = 1  # the augmentation must not depend on the workers
    resumed = finetune.train_classifier(cfg, run_dir, parts, LOG)

    assert resumed == whole
    a = torch.load(tmp_path / "whole" / "classifier.pt", weights_only=True)
    b = torch.load(parts / "classifier.pt", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # a finished fine-tuning is not redone
    again = finetune.train_classifier(cfg, run_dir, parts, LOG)
    assert again == whole


def test_checkpoint_of_another_configuration_is_refused(run_dir, tmp_path):
    from folk.engine.hooks import StopRequested, stop_after
    from folk.errors import RunDirError
    from folk.evals import finetune

    cfg = eval_cfg(run_dir, "eval.finetune.epochs=1", *FAST)
    with pytest.raises(StopRequested):
        finetune.train_classifier(cfg, run_dir, tmp_path, LOG, hooks=[stop_after(3)])
    other = eval_cfg(run_dir, "eval.finetune.epochs=1", "eval.finetune.base_lr=1e-2", *FAST)
    with pytest.raises(RunDirError, match="checkpoint.pt"):
        finetune.train_classifier(other, run_dir, tmp_path, LOG)


def test_missing_backbone_and_bad_accumulation_are_clear_errors(fashion_root, tmp_path, capsys):
    from folk.cli import main

    run = make_run_dir(tmp_path / "run", fashion_root)
    shutil.copy(run / "backbone.pt", tmp_path / "backbone.pt")
    (run / "backbone.pt").unlink()
    assert main(["eval", "finetune", "--run", str(run)]) == 2
    assert "no backbone.pt" in capsys.readouterr().err
    shutil.copy(tmp_path / "backbone.pt", run / "backbone.pt")
    assert (
        main(
            [
                "eval",
                "finetune",
                "--run",
                str(run),
                "--set",
                "eval.finetune.batch_size=10",
                "--set",
                "eval.finetune.accum_steps=3",
            ]
        )
        == 2
    )
    assert "eval.finetune.accum_steps" in capsys.readouterr().err
    assert not (run / "eval" / "finetune" / "metrics.json").exists()
