"""What only a CUDA device can check: the FOLK step under bf16 autocast and torch.compile,
the filters drawing from a CUDA generator, a channels-last ResNet, SyncBatchNorm in a
one-process group, and the input path with pinned memory feeding the device.

Every test is marked ``cuda`` and skipped, with the reason, where torch sees no CUDA
device; ``pytest -m cuda`` (scripts/gpu_check.sh, step cuda_tests) selects them.
"""

from __future__ import annotations

import json
import socket

import pytest
import torch

from conftest import REPO

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs a CUDA device (torch.cuda.is_available() is False)",
    ),
]

TINY = [
    "model.arch=vit_tiny_patch16_224",
    "model.img_size=32",
    "model.patch_size=8",
    "model.depth=2",
    "model.embed_dim=64",
    "model.num_heads=2",
    "model.head_out_dim=128",
    "model.head_hidden_dim=64",
    "model.head_bottleneck_dim=32",
    "filter.mfm_radius=16",
]
RESNET = [
    "model.arch=resnet50",
    "model.img_size=64",
    "model.head_out_dim=128",
    "model.head_hidden_dim=64",
    "model.head_bottleneck_dim=32",
]
CUDA = torch.device("cuda")


def _objective(*extra: str):
    from folk.config import load_config
    from folk.engine.step import FolkObjective
    from folk.models import build_student_teacher

    cfg = load_config(None, TINY + list(extra))
    torch.manual_seed(0)
    student, teacher = build_student_teacher(cfg)
    student.to(CUDA)
    teacher.to(CUDA)
    return cfg, student, teacher, FolkObjective(cfg, student, teacher, CUDA)


def _views(n: int = 8, size: int = 32, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator(device=CUDA).manual_seed(seed)
    return [torch.rand(n, 3, size, size, device=CUDA, generator=g) for _ in range(2)]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator(device=CUDA).manual_seed(seed)


def test_bf16_autocast_step_is_finite_and_near_fp32():
    cfg, student, teacher, objective = _objective("pretrain.amp=bf16")
    assert objective.amp_dtype == torch.bfloat16
    views = _views()
    loss, terms = objective(views, 0.04, _gen())
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(v).all() for v in terms.values())
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    _, _, _, fp32 = _objective("pretrain.amp=fp32")
    assert fp32.amp_dtype is None
    with torch.no_grad():
        reference, _ = fp32(views, 0.04, _gen())
    # bf16 keeps 8 bits of mantissa: a few per cent of the loss, not more
    assert abs(loss.item() - reference.item()) <= 0.03 * abs(reference.item()) + 0.02


@pytest.mark.parametrize("name", ["com_rcom", "mfm", "random_frequency", "random_patch"])
def test_filter_on_cuda_reproduces_views_from_the_seed(name):
    from folk.filters import apply_filter

    kw = dict(
        portions=[0.005, 0.01, 0.05], p_com=0.5, radius=8.0, rho=0.5, patch_ratio=0.6, patch_size=8
    )
    x = torch.rand(16, 3, 64, 64, device=CUDA, generator=_gen(1))
    first = apply_filter(name, x, generator=_gen(7), **kw)
    again = apply_filter(name, x, generator=_gen(7), **kw)
    other = apply_filter(name, x, generator=_gen(8), **kw)
    assert first[0].device == x.device and first[0].dtype == torch.float32
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not (torch.equal(first[0], other[0]) and torch.equal(first[1], other[1]))
    if x.is_cuda:  # a CPU generator cannot draw the views of CUDA images
        with pytest.raises(ValueError, match="generator lives on cpu"):
            apply_filter(name, x, generator=torch.Generator().manual_seed(7), **kw)


def test_objective_on_cuda_is_a_function_of_the_seed():
    _, _, _, objective = _objective("pretrain.amp=fp32")
    views = _views()
    with torch.no_grad():
        a, _ = objective(views, 0.04, _gen(3))
        b, _ = objective(views, 0.04, _gen(3))
    assert torch.equal(a, b)


def test_compiled_step_matches_eager():
    _, student, teacher, objective = _objective("pretrain.amp=fp32")
    views = _views()
    with torch.no_grad():
        eager, _ = objective(views, 0.04, _gen())
    objective.student = torch.compile(student)
    objective.teacher = torch.compile(teacher)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4, fused=True)
    compiled, _ = objective(views, 0.04, _gen())
    compiled.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    assert compiled.item() == pytest.approx(eager.item(), rel=1e-3, abs=1e-4)
    second, _ = objective(views, 0.04, _gen())  # after an update: no recompile error
    assert torch.isfinite(second)


def test_channels_last_resnet_matches_contiguous():
    from folk.config import load_config
    from folk.models import build_backbone

    cfg = load_config(None, RESNET)
    torch.manual_seed(0)
    model = build_backbone(cfg, deterministic=True).to(CUDA).eval()
    x = torch.rand(4, 3, 64, 64, device=CUDA, generator=_gen(2))
    with torch.no_grad(), torch.backends.cudnn.flags(allow_tf32=False):
        reference = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = model(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(out, reference, rtol=1e-3, atol=1e-3)
    assert torch.isfinite(half).all()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sync_batchnorm_in_a_one_process_group():
    import torch.distributed as dist
    import torch.nn as nn

    from folk.config import load_config
    from folk.models import build_backbone

    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    try:
        dist.init_process_group(
            "nccl", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
        )
    except Exception as exc:  # NCCL missing or unusable here
        pytest.skip(f"cannot start a one-process NCCL group: {type(exc).__name__}: {exc}")
    try:
        cfg = load_config(None, RESNET)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(build_backbone(cfg)).to(CUDA).train()
        assert any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
        assert not any(type(m) is nn.BatchNorm2d for m in model.modules())
        x = torch.rand(4, 3, 64, 64, device=CUDA, generator=_gen(4))
        out = model(x)
        out.float().square().mean().backward()
        assert torch.isfinite(out).all()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    finally:
        dist.destroy_process_group()


def test_input_path_feeds_the_device(tmp_path, capsys):
    from folk.cli import main
    from folk.data.photos import write_photos

    root = tmp_path / "photos"
    write_photos(root, count=16, seed=0)
    argv = [
        "bench",
        "--data",
        "--config",
        str(REPO / "params" / "bench-photos.yaml"),
        "--rounds",
        "1",
        "--images",
        "4",
        "--batch-size",
        "4",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--iterations",
        "2",
    ]
    for item in TINY + [f"data.root={root}", "data.num_workers=1", "model.img_size=64"]:
        argv += ["--set", item]
    assert main(argv) == 0
    printed = [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.startswith("{")]
    by = {r["measure"]: r for r in printed}
    assert by["whole"]["pin_memory"] is True and by["whole"]["images_per_s"] > 0
    assert by["step"]["dtype"] == "bfloat16" and "cpu" not in by["summary"]["device"]
