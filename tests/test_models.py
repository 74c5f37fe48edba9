"""Networks: shapes, EMA update against an explicit formula, DINO head details."""

from __future__ import annotations

import pytest
import torch

from folk.config import load_config
from folk.models import DINOHead, build_student_teacher, ema_update

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
]


@pytest.mark.parametrize("arch, size", [("vit_tiny_patch16_224", 32), ("resnet50", 64)])
def test_student_outputs(arch, size):
    cfg = load_config(None, TINY + [f"model.arch={arch}", f"model.img_size={size}"])
    student, teacher = build_student_teacher(cfg)
    x = torch.rand(2, 3, size, size)
    logits, recon = student(x)
    assert logits.shape == (2, 64)
    assert recon.shape == x.shape  # the MFM head predicts the whole image
    assert teacher(x).shape == (2, 64)
    assert not any(p.requires_grad for p in teacher.parameters())


def test_ema_update_matches_formula():
    torch.manual_seed(0)
    cfg = load_config(None, TINY)
    student, teacher = build_student_teacher(cfg)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    before_t = {k: v.clone() for k, v in teacher.state_dict().items()}
    s_state = student.state_dict()
    ema_update(teacher, student, 0.9)
    for key, value in teacher.state_dict().items():
        skey = key  # same module names: backbone.*, dino_head.*
        want = 0.9 * before_t[key] + 0.1 * s_state[skey]
        torch.testing.assert_close(value, want, rtol=0, atol=1e-6)


def test_dino_head_is_l2_normalised_and_last_layer_fixed_norm():
    head = DINOHead(16, 32, hidden_dim=8, bottleneck_dim=4, nlayers=3, norm_last_layer=True)
    weight = head.last_layer.weight
    torch.testing.assert_close(weight.norm(dim=1), torch.ones(32))
    g = head.last_layer.parametrizations.weight.original0
    assert not g.requires_grad
    out = head(torch.randn(5, 16))
    assert out.shape == (5, 32)
    # inputs to the prototypes are unit vectors, so each logit is bounded by 1
    assert out.abs().max() <= 1.0 + 1e-5


def test_mode_without_distillation_has_no_teacher():
    cfg = load_config(None, TINY + ["pretrain.variant=mfm"])
    student, teacher = build_student_teacher(cfg)
    assert teacher is None and student.dino_head is None and student.mfm_head is not None


def test_dino_head_batch_norm_option():
    torch.manual_seed(0)
    plain = DINOHead(16, 32, hidden_dim=8, bottleneck_dim=4, nlayers=3)
    with_bn = DINOHead(16, 32, hidden_dim=8, bottleneck_dim=4, nlayers=3, use_bn=True)
    kinds = [type(m).__name__ for m in with_bn.mlp]
    assert kinds == ["Linear", "BatchNorm1d", "GELU", "Linear", "BatchNorm1d", "GELU", "Linear"]
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in plain.modules())
    # nearly equal inputs: batch statistics keep their differences in the output
    x = torch.randn(1, 16) + 1e-3 * torch.randn(8, 16)
    assert with_bn(x).std(dim=0).mean() > 10 * plain(x).std(dim=0).mean()


def test_teacher_keeps_its_own_head_batch_norm_statistics():
    """DINO averages parameters only: the student's batch statistics (of filtered views)
    never reach the teacher; the teacher's come from its own forward passes."""
    cfg = load_config(None, TINY + ["model.head_use_bn=true"])
    student, teacher = build_student_teacher(cfg)
    student(torch.rand(4, 3, 32, 32))  # training mode: the student's running statistics move
    before = [b.clone() for b in teacher.dino_head.buffers()]
    ema_update(teacher, student, 0.99)
    for (name, t_buf), s_buf, b in zip(
        teacher.dino_head.named_buffers(), student.dino_head.buffers(), before
    ):
        assert torch.equal(t_buf, b), name
        if t_buf.is_floating_point():
            assert not torch.equal(t_buf, s_buf), name


def test_inference_layout_switches_a_cpu_resnet_only_while_inside():
    import timm

    from folk.models import inference_layout

    torch.manual_seed(0)
    net = timm.create_model("resnet18", in_chans=1, num_classes=0).eval()
    params = list(net.parameters())
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        plain = net(x)
        with inference_layout(net, torch.device("cpu")) as inside:
            assert inside is net
            # a multi-channel conv: the 1-channel stem's weight is contiguous in both layouts
            weight = net.layer1[0].conv1.weight
            assert weight.is_contiguous(memory_format=torch.channels_last)
            assert not weight.is_contiguous()
            switched = net(x)
    # back to the layout it came in, the same parameter objects (an optimizer holds them)
    assert net.layer1[0].conv1.weight.is_contiguous()
    assert all(a is b for a, b in zip(params, net.parameters()))
    # the same function: equal to float32 rounding of another summation order
    assert torch.allclose(plain, switched, rtol=1e-4, atol=1e-5)
    # a ViT, or any device but the CPU, is left as it is
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, in_chans=1)
    with inference_layout(vit, torch.device("cpu")):
        assert vit.patch_embed.proj.weight.is_contiguous()
    with inference_layout(net, torch.device("meta")):
        assert net.layer1[0].conv1.weight.is_contiguous()


def test_a_network_trains_after_inference_layout_inside_inference_mode():
    """How the evaluations call it (inside torch.inference_mode), then a training step, as
    the pre-training monitor does between iterations: the weights must not come back as
    inference tensors."""
    import timm

    from folk.models import inference_layout

    net = timm.create_model("resnet18", in_chans=1, num_classes=3)
    with torch.inference_mode(), inference_layout(net, torch.device("cpu")):
        net(torch.randn(2, 1, 32, 32))
    assert not any(p.is_inference() for p in net.parameters())
    assert not any(b.is_inference() for b in net.buffers())
    net.train()
    net(torch.randn(2, 1, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
