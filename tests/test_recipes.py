"""Each variant trains with its source's recipe: the augmentation preset, the optimisation
recipe and the per-architecture choices, checked against the values of the reference code
written out here (MFM's configs/*/mfm_pretrain__*.yaml and config.py, DINO's main_dino.py
defaults and README), and the learning-rate schedules against timm's scheduler (the one MFM
trains with) and DINO's formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml

from conftest import REPO
from folk.cli import main
from folk.config import load_config, load_run_config, save_config
from folk.errors import ConfigError
from folk.schedules import pretrain_schedules

# MFM: RandomResizedCrop(scale=(MIN_CROP_SCALE=0.2, 1), bicubic) + RandomHorizontalFlip
MFM_AUGMENT = {
    "crop_scale": [0.2, 1.0],
    "flip_prob": 0.5,
    "color_jitter_prob": 0.0,
    "grayscale_prob": 0.0,
    "blur_prob": [0.0, 0.0],
    "solarize_prob": [0.0, 0.0],
}
# DINO's DataAugmentationDINO; global crops (0.14, 1) when multi-crop is off
DINO_AUGMENT = {
    "crop_scale": [0.14, 1.0],
    "flip_prob": 0.5,
    "color_jitter_prob": 0.8,
    "grayscale_prob": 0.2,
    "blur_prob": [1.0, 0.1],
    "solarize_prob": [0.0, 0.2],
}
# MFM's TRAIN section (ViT-S, ViT-B and ResNet-50 configs alike) and DROP_PATH_RATE
MFM_OPTIM = {
    "base_lr": 3e-4,
    "warmup_lr": 2.5e-7,
    "min_lr": 2.5e-6,
    "scale_min_lr": True,
    "warmup_epochs": 20,
    "weight_decay": 0.05,
    "weight_decay_end": 0.05,
    "betas": [0.9, 0.95],
    "clip_grad": 3.0,
    "no_wd_tokens": True,
    "cosine_after_warmup": False,
    "clip_mode": "global",
}
# DINO's main_dino.py: lr 5e-4 per 256 images, warm-up 10 epochs from 0, min_lr 1e-6,
# weight decay 0.04 -> 0.4, AdamW's default betas, clip 3.0, student drop path 0.1
DINO_OPTIM = {
    "base_lr": 5e-4 * 512 / 256,
    "warmup_lr": 0.0,
    "min_lr": 1e-6,
    "scale_min_lr": False,
    "warmup_epochs": 10,
    "weight_decay": 0.04,
    "weight_decay_end": 0.4,
    "betas": [0.9, 0.999],
    "clip_grad": 3.0,
    "no_wd_tokens": False,
    "cosine_after_warmup": True,
    "clip_mode": "per_param",
}


def shown(capsys, *sets: str) -> dict:
    """What `folk config --config params/paper.yaml --set ...` prints, parsed."""
    argv = ["config", "--config", "params/paper.yaml"]
    for item in sets:
        argv += ["--set", item]
    assert main(argv) == 0
    return yaml.safe_load(capsys.readouterr().out)


def assert_subset(section: dict, expected: dict) -> None:
    for key, value in expected.items():
        assert section[key] == pytest.approx(value), key


@pytest.mark.parametrize("variant", ["mfm", "mfm_comrcom"])
def test_mfm_variants_show_mfm_recipe(capsys, monkeypatch, variant):
    monkeypatch.chdir(REPO)
    cfg = shown(capsys, f"pretrain.variant={variant}")
    assert cfg["augment"]["preset"] == "mfm" and cfg["pretrain"]["optim_recipe"] == "mfm"
    assert_subset(cfg["augment"], MFM_AUGMENT)
    assert_subset(cfg["pretrain"], MFM_OPTIM)
    assert cfg["model"]["drop_path"] == 0.0
    assert cfg["pretrain"]["epochs"] == 300 and cfg["pretrain"]["batch_size"] == 2048


def test_dino_baseline_shows_dino_recipe(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = shown(capsys, "pretrain.variant=dino_2view")
    assert cfg["augment"]["preset"] == "dino" and cfg["pretrain"]["optim_recipe"] == "dino"
    assert_subset(cfg["augment"], DINO_AUGMENT)
    assert_subset(cfg["pretrain"], DINO_OPTIM)
    assert cfg["model"]["drop_path"] == 0.1
    # DINO's teacher: momentum 0.996 -> 1 (cosine), temperature 0.04 -> 0.07 over 30 epochs
    assert_subset(
        cfg["pretrain"],
        {
            "momentum_teacher": 0.996,
            "momentum_teacher_end": 1.0,
            "warmup_teacher_temp": 0.04,
            "final_teacher_temp": 0.07,
            "warmup_teacher_temp_epochs": 30,
            "center_momentum": 0.9,
            "student_temp": 0.1,
        },
    )


def test_folk_shows_dino_augmentation_and_mfm_optimiser(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = shown(capsys, "pretrain.variant=folk")
    assert cfg["augment"]["preset"] == "folk" and cfg["pretrain"]["optim_recipe"] == "mfm"
    dino_but_blur = {k: v for k, v in DINO_AUGMENT.items() if k != "blur_prob"}
    assert_subset(cfg["augment"], dino_but_blur)
    assert cfg["augment"]["blur_prob"] == [0.1, 0.1]  # measured: folk/recipes.py
    assert_subset(cfg["pretrain"], MFM_OPTIM)


def test_crop_scale_follows_multicrop():
    one = load_config(None, ["pretrain.variant=dino_2view"])
    multi = load_config(None, ["pretrain.variant=dino_2view", "augment.local_crops_number=8"])
    assert one["augment"]["crop_scale"] == [0.14, 1.0]
    assert multi["augment"]["crop_scale"] == [0.4, 1.0]
    # MFM has no multi-crop: its crop scale is its own either way
    mfm = load_config(None, ["pretrain.variant=mfm", "augment.local_crops_number=8"])
    assert mfm["augment"]["crop_scale"] == [0.2, 1.0]


def test_explicit_keys_win_over_presets_and_recipes():
    cfg = load_config(
        None,
        [
            "pretrain.variant=mfm",
            "augment.blur_prob=[0.3, 0.4]",
            "augment.crop_scale=[0.5, 1.0]",
            "pretrain.base_lr=1e-3",
            "model.drop_path=0.2",
            "augment.preset=dino",
            "pretrain.optim_recipe=dino",
        ],
    )
    assert cfg["augment"]["blur_prob"] == [0.3, 0.4] and cfg["augment"]["crop_scale"] == [0.5, 1.0]
    assert cfg["augment"]["color_jitter_prob"] == 0.8  # from the preset asked for
    assert cfg["pretrain"]["base_lr"] == 1e-3 and cfg["model"]["drop_path"] == 0.2
    assert cfg["pretrain"]["betas"] == [0.9, 0.999]


def test_resolved_config_records_presets_and_reloads_unchanged(tmp_path):
    cfg = load_config(None, ["pretrain.variant=mfm", "model.arch=resnet50"])
    (tmp_path / "run").mkdir()
    save_config(cfg, tmp_path / "run" / "config.yaml")
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["augment"]["preset"] == "mfm" and saved["pretrain"]["optim_recipe"] == "mfm"
    assert all(v is not None for v in saved["augment"].values())
    assert load_run_config(tmp_path / "run") == cfg


@pytest.mark.parametrize(
    "arch, norm_last, blocks, avgpool, p_low",
    [
        ("vit_small_patch16_224", False, 4, False, 0.5),  # DINO README: only safe with ViT-S
        ("vit_base_patch16_224", True, 1, True, 0.5),  # DINO: --n_last_blocks 1 --avgpool true
        ("vit_tiny_patch16_224", True, 4, False, 0.5),  # DINO's defaults
        ("resnet50", True, 4, False, 0.3),  # MFM ResNet-50: SAMPLE_RATIO 0.3
    ],
)
def test_per_architecture_defaults(arch, norm_last, blocks, avgpool, p_low):
    cfg = load_config(None, [f"model.arch={arch}"])
    assert cfg["model"]["head_norm_last_layer"] is norm_last
    assert cfg["eval"]["linear"]["n_last_blocks"] == blocks
    assert cfg["eval"]["linear"]["avgpool_patchtokens"] is avgpool
    assert cfg["filter"]["mfm_p_low"] == p_low
    overridden = load_config(
        None,
        [
            f"model.arch={arch}",
            "model.head_norm_last_layer=true",
            "eval.linear.n_last_blocks=2",
            "filter.mfm_p_low=0.7",
        ],
    )
    assert overridden["model"]["head_norm_last_layer"] is True
    assert overridden["eval"]["linear"]["n_last_blocks"] == 2
    assert overridden["filter"]["mfm_p_low"] == 0.7


@pytest.mark.parametrize(
    "item, needle",
    [
        ("augment.blur_prob=sharp", "augment.blur_prob"),
        ("augment.blur_prob=[0.5]", "augment.blur_prob"),
        ("augment.crop_scale=[0.0, 1.0]", "augment.crop_scale"),
        ("model.drop_path=1.5", "model.drop_path"),
        ("pretrain.betas=[0.9, 1.0]", "pretrain.betas"),
        ("pretrain.scale_min_lr=3", "pretrain.scale_min_lr"),
        ("augment.preset=simclr", "augment.preset"),
        ("pretrain.optim_recipe=sgd", "pretrain.optim_recipe"),
        ("filter.mfm_p_low=2", "filter.mfm_p_low"),
        ("filter.local_views=all", "filter.local_views"),
    ],
)
def test_bad_recipe_values_are_named(item, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(None, [item])


def test_mfm_learning_rate_matches_timm_cosine_scheduler():
    """MFM trains with timm's CosineLRScheduler (warmup_prefix off, per-step updates), all
    three learning rates scaled by batch / 512."""
    from timm.scheduler.cosine_lr import CosineLRScheduler

    cfg = load_config(
        None, ["pretrain.variant=mfm", "pretrain.epochs=12", "pretrain.warmup_epochs=3"]
    )
    iters, batch = 7, 2048
    ours = pretrain_schedules(cfg, iters, batch)["lr"]
    scale = batch / 512
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=3e-4 * scale)
    sched = CosineLRScheduler(
        opt,
        t_initial=12 * iters,
        lr_min=2.5e-6 * scale,
        warmup_lr_init=2.5e-7 * scale,
        warmup_t=3 * iters,
        cycle_limit=1,
        t_in_epochs=False,
    )
    theirs = []
    for t in range(12 * iters):
        sched.step_update(t)
        theirs.append(opt.param_groups[0]["lr"])
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0)
    # weight decay constant at 0.05 (MFM has no weight-decay schedule)
    assert np.allclose(pretrain_schedules(cfg, iters, batch)["wd"], 0.05)


def test_dino_schedules_match_their_formula():
    cfg = load_config(
        None, ["pretrain.variant=dino_2view", "pretrain.epochs=10", "pretrain.warmup_epochs=2"]
    )
    iters, batch = 5, 1024
    s = pretrain_schedules(cfg, iters, batch)
    peak = 5e-4 * batch / 256  # DINO's linear scaling rule
    warm, total = 2 * iters, 10 * iters
    for t in range(total):
        if t < warm:
            want = peak * t / warm
        else:
            i = t - warm
            want = 1e-6 + 0.5 * (peak - 1e-6) * (1 + math.cos(math.pi * i / (total - warm)))
        assert s["lr"][t] == pytest.approx(want, rel=1e-12, abs=1e-18), t
        wd = 0.4 + 0.5 * (0.04 - 0.4) * (1 + math.cos(math.pi * t / total))
        assert s["wd"][t] == pytest.approx(wd, rel=1e-12), t


@pytest.mark.parametrize("recipe, tokens_decayed", [("mfm", False), ("dino", True)])
def test_token_weight_decay_follows_the_recipe(recipe, tokens_decayed):
    from folk.engine.pretrain import param_groups
    from folk.models import Student

    cfg = load_config(
        None,
        [
            f"pretrain.optim_recipe={recipe}",
            "model.img_size=32",
            "model.patch_size=8",
            "model.depth=1",
            "model.embed_dim=32",
            "model.num_heads=2",
            "model.head_out_dim=16",
            "model.head_hidden_dim=16",
            "model.head_bottleneck_dim=8",
        ],
    )
    student = Student(cfg)
    decay, no_decay = param_groups(student, cfg["pretrain"]["no_wd_tokens"])
    names = {id(p): n for n, p in student.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    exempt = {names[id(p)] for p in no_decay["params"]}
    for token in ("backbone.pos_embed", "backbone.cls_token"):
        assert (token in decayed) is tokens_decayed and (token in exempt) is not tokens_decayed
    # both recipes: matrices decayed, biases and norms not (DINO's and MFM's common rule)
    assert "backbone.blocks.0.attn.qkv.weight" in decayed
    assert "backbone.blocks.0.attn.qkv.bias" in exempt and "backbone.norm.weight" in exempt


def test_mfm_preset_views_are_crop_and_flip_only(fashion_root):
    """With the crop fixed to the whole image and no flip, an MFM view is the resized image
    itself (no photometric change), while DINO's preset changes it."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    from folk.data import build_dataset
    from folk.data.transforms import PretrainViews

    base = [
        "data.dataset=fashion_mnist",
        f"data.root={fashion_root}",
        "data.in_chans=1",
        "data.num_classes=10",
        "data.mean=[0.286]",
        "data.std=[0.353]",
        "model.img_size=32",
        "model.patch_size=4",
        "augment.crop_scale=[1.0, 1.0]",
        "augment.flip_prob=0.0",
    ]
    image = build_dataset(load_config(None, base), "train")[0][0]
    want = F.to_dtype(
        F.resize(
            F.to_image(image), [32, 32], interpolation=InterpolationMode.BICUBIC, antialias=True
        ),
        torch.float32,
        scale=True,
    )
    torch.manual_seed(0)
    mfm = PretrainViews(load_config(None, base + ["pretrain.variant=mfm"]))
    for _ in range(5):
        for view in mfm(image):
            assert torch.equal(view, want)
    dino = PretrainViews(load_config(None, base + ["pretrain.variant=dino_2view"]))
    assert any(not torch.equal(view, want) for _ in range(5) for view in dino(image))


@pytest.mark.parametrize("mode", ["global", "per_param"])
def test_gradient_clipping_modes_match_their_formulas(mode):
    """MFM clips the joint norm (torch's clip_grad_norm_); DINO's clip_gradients scales each
    tensor whose own norm exceeds the bound by bound / (norm + 1e-6)."""
    from folk.engine.pretrain import clip_gradients

    rng = np.random.default_rng(0)
    grads = [
        rng.normal(size=s) * scale for s, scale in (((3, 4), 5.0), ((7,), 0.01), ((2, 2, 2), 2.0))
    ]
    params = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64))
        p.grad = torch.tensor(g)
        params.append(p)
    params.append(torch.nn.Parameter(torch.zeros(2)))  # no gradient: left alone
    clip_gradients(params, 1.5, mode)
    if mode == "global":
        total = math.sqrt(sum(float((g**2).sum()) for g in grads))
        want = [g * min(1.0, 1.5 / (total + 1e-6)) for g in grads]
    else:
        want = []
        for g in grads:
            norm = math.sqrt(float((g**2).sum()))
            coef = 1.5 / (norm + 1e-6)
            want.append(g * coef if coef < 1 else g)
    for p, w in zip(params, want):
        np.testing.assert_allclose(p.grad.numpy(), w, rtol=1e-10)
    assert params[-1].grad is None


def test_recipes_choose_the_clipping_of_their_source():
    assert load_config(None, ["pretrain.variant=mfm"])["pretrain"]["clip_mode"] == "global"
    assert load_config(None, ["pretrain.variant=folk"])["pretrain"]["clip_mode"] == "global"
    assert (
        load_config(None, ["pretrain.variant=dino_2view"])["pretrain"]["clip_mode"] == "per_param"
    )


def test_linear_probe_blocks_capped_by_a_shortened_vit():
    assert load_config(None, ["model.depth=2"])["eval"]["linear"]["n_last_blocks"] == 1  # ViT-B
    small = load_config(None, ["model.arch=vit_small_patch16_224", "model.depth=2"])
    assert small["eval"]["linear"]["n_last_blocks"] == 2
    assert (
        load_config(None, ["model.arch=vit_small_patch16_224", "model.depth=6"])["eval"]["linear"][
            "n_last_blocks"
        ]
        == 4
    )
