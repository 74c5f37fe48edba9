"""The teacher and the distillation step as DINO defines them: the EMA averages parameters
only (the teacher's batch-norm statistics are its own), the teacher is deterministic, the
centre moves once per optimiser step, and local crops are filtered only on request.
Every expectation is re-derived by hand (numpy, or the formula written out)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata

from folk.config import load_config
from folk.engine.step import FolkObjective
from folk.models import Student, build_student_teacher, ema_update

torch.set_num_threads(1)

# explicit values for the keys whose defaults are null (resolved from recipes elsewhere)
RESOLVED = [
    "augment.crop_scale=[0.4, 1.0]",
    "augment.flip_prob=0.5",
    "augment.color_jitter_prob=0.8",
    "augment.grayscale_prob=0.2",
    "augment.blur_prob=[1.0, 0.1]",
    "augment.solarize_prob=[0.0, 0.2]",
    "model.drop_path=0.0",
    "model.head_norm_last_layer=true",
    "filter.mfm_p_low=0.3",
]
OPTIM = [
    "pretrain.base_lr=3.0e-4",
    "pretrain.warmup_lr=2.5e-7",
    "pretrain.min_lr=2.5e-6",
    "pretrain.scale_min_lr=true",
    "pretrain.cosine_after_warmup=false",
    "pretrain.weight_decay=0.05",
    "pretrain.weight_decay_end=0.05",
    "pretrain.betas=[0.9, 0.95]",
    "pretrain.no_wd_tokens=true",
]
TINY = [
    "model.arch=vit_tiny_patch16_224",
    "model.img_size=32",
    "model.patch_size=4",
    "model.depth=2",
    "model.embed_dim=48",
    "model.num_heads=3",
    "model.head_out_dim=64",
    "model.head_hidden_dim=32",
    "model.head_bottleneck_dim=16",
    "filter.mfm_radius=16",
    "pretrain.amp=fp32",
]
CPU = torch.device("cpu")


def make_cfg(*extra: str) -> dict:
    return load_config(None, RESOLVED + TINY + list(extra))


def photo_views(n_views: int, batch: int, size: int, seed: int) -> list[torch.Tensor]:
    """Random crops of real photographs in [0, 1]: natural spectra, not noise."""
    rng = np.random.default_rng(seed)
    sources = []
    for name in ("astronaut", "chelsea", "coffee", "camera"):
        array = getattr(skdata, name)().astype(np.float32) / 255.0
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=2)
        sources.append(torch.from_numpy(array).permute(2, 0, 1))
    views = []
    for _ in range(n_views):
        images = []
        for b in range(batch):
            src = sources[b % len(sources)]
            h, w = src.shape[-2:]
            side = int(rng.integers(h // 3, h // 2))
            top, left = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
            crop = src[None, :, top : top + side, left : left + side]
            images.append(
                F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True).clamp(0, 1)
            )
        views.append(torch.cat(images))
    return views


def normalise_np(x: torch.Tensor, cfg: dict) -> np.ndarray:
    mean = np.asarray(cfg["data"]["mean"], dtype=np.float64).reshape(1, -1, 1, 1)
    std = np.asarray(cfg["data"]["std"], dtype=np.float64).reshape(1, -1, 1, 1)
    return (x.double().numpy() - mean) / std


# ------------------------------------------------------------- 1. EMA of parameters only


def test_resnet_teacher_batch_norm_statistics_are_its_own_and_ema_is_on_parameters():
    torch.manual_seed(0)
    cfg = make_cfg("model.arch=resnet50", "model.img_size=32", "model.head_use_bn=true")
    student, teacher = build_student_teacher(cfg)
    objective = FolkObjective(cfg, student, teacher, CPU)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3)
    views = photo_views(2, 4, 32, seed=0)
    norms = {
        name: m
        for name, m in teacher.named_modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    }
    assert len(norms) > 50  # ResNet-50's and the head's batch norms
    inputs: dict[str, list[np.ndarray]] = {name: [] for name in norms}
    hooks = [
        m.register_forward_pre_hook(
            lambda mod, args, name=name: inputs[name].append(args[0].detach().double().numpy())
        )
        for name, m in norms.items()
    ]
    before = {
        name: (m.running_mean.double().numpy().copy(), m.running_var.double().numpy().copy())
        for name, m in norms.items()
    }
    conv1_weight = teacher.backbone.conv1.weight.detach().double().clone()

    loss, _ = objective(views, 0.04, torch.Generator().manual_seed(1))
    objective.apply_center_update()
    loss.backward()
    optimizer.step()
    t_before = {n: p.detach().double().numpy().copy() for n, p in teacher.named_parameters()}
    s_after = dict(student.named_parameters())
    s_after = {n: s_after[n].detach().double().numpy().copy() for n in t_before}
    ema_update(teacher, student, 0.9)
    for h in hooks:
        h.remove()

    # BN running statistics: running = (1 - 0.1) running + 0.1 batch, var unbiased
    for name, m in norms.items():
        assert m.momentum == 0.1
        assert len(inputs[name]) == 1, name  # one teacher forward in the step
        act = inputs[name][0]
        axes = (0, 2, 3) if act.ndim == 4 else (0,)
        n = act.size // act.shape[1]
        mean = act.mean(axis=axes)
        var = ((act - mean.reshape((1, -1) + (1,) * (act.ndim - 2))) ** 2).sum(axis=axes) / (n - 1)
        np.testing.assert_allclose(
            m.running_mean.double().numpy(),
            0.9 * before[name][0] + 0.1 * mean,
            rtol=1e-4,
            atol=1e-6,
            err_msg=name,
        )
        np.testing.assert_allclose(
            m.running_var.double().numpy(),
            0.9 * before[name][1] + 0.1 * var,
            rtol=1e-4,
            atol=1e-6,
            err_msg=name,
        )

    # first BN from scratch: conv1 of the normalised *unfiltered* views
    raw = torch.from_numpy(normalise_np(torch.cat(views), cfg))
    pre_bn = F.conv2d(raw, conv1_weight, stride=2, padding=3).numpy()
    n = pre_bn.size // pre_bn.shape[1]
    mean = pre_bn.mean(axis=(0, 2, 3))
    var = pre_bn.var(axis=(0, 2, 3)) * n / (n - 1)
    bn1 = teacher.backbone.bn1
    np.testing.assert_allclose(bn1.running_mean.double().numpy(), 0.1 * mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        bn1.running_var.double().numpy(), 0.9 + 0.1 * var, rtol=1e-4, atol=1e-6
    )
    # the student saw filtered views: its statistics are not the teacher's
    assert not np.allclose(
        student.backbone.bn1.running_mean.numpy(), bn1.running_mean.numpy(), rtol=1e-2, atol=1e-4
    )
    head_bn = [n for n in norms if n.startswith("dino_head")]
    assert head_bn
    s_buffers = dict(student.named_buffers())
    for name in head_bn:
        assert not torch.allclose(s_buffers[name + ".running_mean"], norms[name].running_mean)

    # parameters: m * teacher + (1 - m) * student
    moved = 0
    for name, p in teacher.named_parameters():
        np.testing.assert_allclose(
            p.detach().double().numpy(),
            0.9 * t_before[name] + 0.1 * s_after[name],
            rtol=1e-5,
            atol=1e-6,
            err_msg=name,
        )
        moved += not np.array_equal(t_before[name], s_after[name])
    assert moved > 50  # the optimiser step changed the student


# ------------------------------------------------------------- 2. a deterministic teacher


def _stochastic_modules(module: torch.nn.Module) -> list[str]:
    found = []
    for name, m in module.named_modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0:
            found.append(name)
        if getattr(m, "drop_prob", 0) > 0 or getattr(m, "drop_rate", 0) > 0:
            found.append(name)
    return found


@pytest.mark.parametrize("arch", ["vit_tiny_patch16_224", "resnet50"])
def test_teacher_has_no_stochastic_depth_and_starts_with_the_student_weights(arch):
    torch.manual_seed(0)
    cfg = make_cfg(f"model.arch={arch}", "model.drop_path=0.3")
    student, teacher = build_student_teacher(cfg)
    assert _stochastic_modules(student.backbone)  # the student has stochastic depth
    assert _stochastic_modules(teacher) == []
    for part in ("backbone", "dino_head"):
        s_state = getattr(student, part).state_dict()
        t_state = getattr(teacher, part).state_dict()
        assert s_state.keys() == t_state.keys()
        for key in s_state:
            assert torch.equal(s_state[key], t_state[key]), key
    # same parameter order, which the EMA's zip relies on
    assert [n for n, _ in teacher.backbone.named_parameters()] == [
        n for n, _ in student.backbone.named_parameters()
    ]

    # ResNets start with zero-initialised residual branches, where drop path does nothing:
    # move the weights off the initialisation (the teacher follows with momentum 0)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ema_update(teacher, student, 0.0)
    x = photo_views(1, 4, 32, seed=3)[0]
    student.train()
    teacher.train()
    a, b = student(x)[0], student(x)[0]
    assert not torch.equal(a, b)  # drop path at 0.3 in train mode
    ta, tb = teacher(x), teacher(x)
    assert torch.equal(ta, tb)
    if not arch.startswith("resnet"):
        # no batch statistics in a ViT: the teacher is the student without stochastic depth
        student.eval()
        torch.testing.assert_close(ta, student(x)[0], rtol=1e-5, atol=1e-6)


def test_building_the_teacher_leaves_the_global_random_stream_alone():
    cfg = make_cfg("model.drop_path=0.1")
    torch.manual_seed(5)
    Student(cfg)
    alone = torch.get_rng_state()
    torch.manual_seed(5)
    build_student_teacher(cfg)
    assert torch.equal(torch.get_rng_state(), alone)


# ------------------------------------------------------------- 3. centre once per step


def test_pretrainer_moves_the_centre_once_per_optimiser_step(tiny_cfg, tmp_path, monkeypatch):
    from folk.engine.pretrain import pretrain
    from folk.losses import DistillationLoss

    calls = []
    original = DistillationLoss.forward

    def spy(self, student_out, teacher_out, teacher_temp):
        calls.append(
            (
                self.center.double().numpy().copy(),
                np.concatenate([t.detach().double().numpy() for t in teacher_out]),
            )
        )
        return original(self, student_out, teacher_out, teacher_temp)

    monkeypatch.setattr(DistillationLoss, "forward", spy)
    cfg = tiny_cfg(
        *RESOLVED,
        *OPTIM,
        "pretrain.accum_steps=2",
        "pretrain.max_iterations=2",
        "pretrain.center_momentum=0.9",
    )
    pretrain(cfg, tmp_path)
    assert len(calls) == 4  # 2 steps x 2 micro-batches
    np.testing.assert_array_equal(calls[0][0], 0)
    np.testing.assert_array_equal(calls[1][0], 0)  # not moved between micro-batches
    step1 = np.concatenate([calls[0][1], calls[1][1]])
    c1 = 0.9 * 0 + 0.1 * step1.mean(axis=0, keepdims=True)
    np.testing.assert_allclose(calls[2][0], c1, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(calls[3][0], c1, rtol=1e-5, atol=1e-7)
    step2 = np.concatenate([calls[2][1], calls[3][1]])
    c2 = 0.9 * c1 + 0.1 * step2.mean(axis=0, keepdims=True)
    state = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
    assert state["iteration"] == 2
    assert set(state["objective"]) == {"center"}  # no accumulator in the checkpoint
    np.testing.assert_allclose(
        state["objective"]["center"].double().numpy(), c2, rtol=1e-5, atol=1e-7
    )
    # one update per micro-batch would have given a different centre
    per_micro = np.zeros_like(c2)
    for _, rows in calls:
        per_micro = 0.9 * per_micro + 0.1 * rows.mean(axis=0, keepdims=True)
    assert not np.allclose(per_micro, c2, rtol=1e-3, atol=1e-6)


def test_objective_forward_accumulates_and_apply_moves_the_centre():
    torch.manual_seed(0)
    cfg = make_cfg()
    student, teacher = build_student_teacher(cfg)
    objective = FolkObjective(cfg, student, teacher, CPU)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for seed in (1, 2):
        views = photo_views(2, 3, 32, seed=seed)
        with torch.no_grad():
            normalised = torch.from_numpy(normalise_np(torch.cat(views), cfg)).float()
            rows.append(teacher(normalised).double().numpy())
        objective(views, 0.04, gen)
        assert torch.equal(objective.distill.center, torch.zeros(1, 64))
    objective.apply_center_update()
    expected = 0.1 * np.concatenate(rows).mean(axis=0, keepdims=True)
    np.testing.assert_allclose(
        objective.distill.center.double().numpy(), expected, rtol=1e-4, atol=1e-6
    )
    objective.apply_center_update()  # nothing accumulated since: no second move
    np.testing.assert_allclose(
        objective.distill.center.double().numpy(), expected, rtol=1e-4, atol=1e-6
    )


# ------------------------------------------------------------- 4. local crops and filtering


def _student_inputs(student) -> tuple[list[torch.Tensor], list[int], list]:
    seen, recon_batches = [], []
    hooks = [
        student.backbone.patch_embed.register_forward_pre_hook(
            lambda mod, args: seen.append(args[0].detach().clone())
        ),
        student.mfm_head.register_forward_hook(
            lambda mod, args, out: recon_batches.append(args[0].shape[0])
        ),
    ]
    return seen, recon_batches, hooks


@pytest.mark.parametrize(
    "variant, filter_name", [("folk", "com_rcom"), ("folk_mfm_filters", "mfm")]
)
@pytest.mark.parametrize("local_views", ["none", "same"])
def test_local_views_filtering(variant, filter_name, local_views):
    from folk import filters

    torch.manual_seed(0)
    cfg = make_cfg(
        f"pretrain.variant={variant}",
        "augment.local_crops_number=2",
        "augment.local_crops_size=16",
        f"filter.local_views={local_views}",
    )
    assert cfg["method"]["filter"] == filter_name
    student, teacher = build_student_teacher(cfg)
    objective = FolkObjective(cfg, student, teacher, CPU)
    batch = 3
    views = photo_views(2, batch, 32, seed=7) + photo_views(2, batch, 16, seed=8)
    seen, recon_batches, hooks = _student_inputs(student)
    objective(views, 0.04, torch.Generator().manual_seed(9))
    for h in hooks:
        h.remove()
    assert [tuple(s.shape[-2:]) for s in seen] == [(32, 32), (16, 16), (16, 16)]
    assert recon_batches == [2 * batch]  # reconstruction: the global views only

    # the same draws by hand: the global views first, then the local views as one batch
    g = torch.Generator().manual_seed(9)
    globals_ = torch.cat(views[:2])
    locals_ = torch.cat(views[2:])
    if filter_name == "com_rcom":
        expected_globals, _ = filters.com_rcom(globals_, [0.005, 0.01, 0.05], 0.5, g)
        filtered_locals, _ = filters.com_rcom(locals_, [0.005, 0.01, 0.05], 0.5, g)
    else:  # radius 16 px at 224 px, scaled to each view's size
        expected_globals, _ = filters.mfm(globals_, 16 * 32 / 224, g, p_low=0.3)
        filtered_locals, _ = filters.mfm(locals_, 16 * 16 / 224, g, p_low=0.3)
    np.testing.assert_allclose(
        seen[0].double().numpy(), normalise_np(expected_globals, cfg), rtol=0, atol=1e-5
    )
    expected_locals = filtered_locals if local_views == "same" else locals_
    got = torch.cat(seen[1:])
    np.testing.assert_allclose(
        got.double().numpy(), normalise_np(expected_locals, cfg), rtol=0, atol=1e-5
    )
    other = locals_ if local_views == "same" else filtered_locals
    assert not np.allclose(got.double().numpy(), normalise_np(other, cfg), atol=1e-3)
