"""Networks: timm backbones, DINO projection head, MFM pixel-shuffle head, student/teacher.

Spec, section 2. Backbones come from timm unchanged, so ``backbone.pt`` loads into a plain
``timm.create_model`` with ``backbone_kwargs``.
"""

from __future__ import annotations

import copy
import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from folk import __version__
from folk.config import load_run_config
from folk.errors import DamagedFileError, RunDirError
from folk.recipes import is_resnet
from folk.utils.io import load_torch_file


def backbone_kwargs(cfg: dict) -> dict:
    """Keyword arguments of ``timm.create_model(cfg['model']['arch'], **kwargs)``."""
    m = cfg["model"]
    kwargs = dict(
        pretrained=False,
        num_classes=0,
        in_chans=cfg["data"]["in_chans"],
        drop_path_rate=m["drop_path"],
    )
    if not is_resnet(m["arch"]):
        kwargs.update(img_size=m["img_size"], patch_size=m["patch_size"])
        for key in ("depth", "embed_dim", "num_heads"):
            if m[key]:
                kwargs[key] = m[key]
        if cfg["augment"]["local_crops_number"] > 0:
            # multi-crop: local views are smaller than img_size (position embeddings are
            # interpolated); the weights are the same, so a plain model still loads them
            kwargs["dynamic_img_size"] = True
    return kwargs


def exported_metadata(cfg: dict) -> dict[str, str]:
    """The header of an exported backbone (``backbone.safetensors``): what rebuilds the
    network around the weights, ``timm.create_model(arch, **json.loads(timm_kwargs))``."""
    return {
        "format": "pt",
        "arch": cfg["model"]["arch"],
        "timm_kwargs": json.dumps(backbone_kwargs(cfg), sort_keys=True),
        "variant": cfg["pretrain"]["variant"],
        "folk_version": __version__,
    }


def build_backbone(
    cfg: dict,
    drop_path: float | None = None,
    deterministic: bool = False,
    dilated_stride: int | None = None,
) -> nn.Module:
    """``deterministic``: no stochastic depth and every dropout rate 0 (the teacher's).
    ``dilated_stride`` (ResNet only): the last stages dilated instead of strided so that the
    output stride is 8 or 16 (DeepLab); the parameters are the same tensors."""
    kwargs = backbone_kwargs(cfg)
    if drop_path is not None:
        kwargs["drop_path_rate"] = drop_path
    if dilated_stride is not None and dilated_stride != 32:
        if not is_resnet(cfg["model"]["arch"]):
            raise ValueError(f"a dilated output stride needs a ResNet, not {cfg['model']['arch']}")
        kwargs["output_stride"] = dilated_stride
    if deterministic:
        kwargs.update(drop_path_rate=0.0, drop_rate=0.0)
        if not is_resnet(cfg["model"]["arch"]):
            kwargs.update(
                pos_drop_rate=0.0, patch_drop_rate=0.0, proj_drop_rate=0.0, attn_drop_rate=0.0
            )
    return timm.create_model(cfg["model"]["arch"], **kwargs)


def output_stride(cfg: dict) -> int:
    return 32 if is_resnet(cfg["model"]["arch"]) else cfg["model"]["patch_size"]


def load_backbone(
    run_dir: str | Path,
    source: str = "teacher",
    drop_path: float | None = None,
    dilated_stride: int | None = None,
) -> tuple[nn.Module, dict]:
    """Build the run's backbone from its ``config.yaml`` and load its final weights."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    name = {"teacher": "backbone.pt", "student": "student_backbone.pt"}[source]
    path = run_dir / name
    if not path.is_file():
        raise RunDirError(
            f"{run_dir}: no {name}; pre-training has not finished in this run directory"
        )

    backbone = build_backbone(cfg, drop_path=drop_path, dilated_stride=dilated_stride)
    # finish() writes the weights from the final checkpoint, which a resumed run restores
    remedy = (
        f"delete {path} and {run_dir / 'DONE.json'}, then run `folk pretrain` again with "
        f"--out {run_dir}: it rewrites them from checkpoints/last.pt (or trains again "
        f"without one)"
    )
    state = load_torch_file(path, remedy)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DamagedFileError(
            f"{path}: holds a {type(state).__name__}, not a state dict of tensors; {remedy}"
        )
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = "; ".join(line.strip() for line in first[:4])
        raise RunDirError(
            f"{path}: weights do not match model.arch={cfg['model']['arch']!r} "
            f"as configured in {run_dir / 'config.yaml'}: {detail}"
        ) from None
    return backbone, cfg


class DINOHead(nn.Module):
    """MLP (GELU) -> bottleneck -> L2 normalise -> weight-normalised prototypes (DINO).

    ``use_bn``: batch normalisation after each hidden linear layer (DINO's
    ``use_bn_in_head``). Off for ViTs in DINO; it keeps per-image differences in the head's
    output when the backbone's features of different images are still nearly equal, which is
    what a short run from scratch starts with.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
        norm_last_layer: bool = True,
        use_bn: bool = False,
    ):
        super().__init__()
        if nlayers == 1:
            self.mlp = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers: list[nn.Module] = []
            for layer in range(nlayers - 1):
                layers.append(nn.Linear(in_dim if layer == 0 else hidden_dim, hidden_dim))
                if use_bn:
                    layers.append(nn.BatchNorm1d(hidden_dim))
                layers.append(nn.GELU())
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        self.apply(self._init_weights)
        self.last_layer = nn.utils.parametrizations.weight_norm(
            nn.Linear(bottleneck_dim, out_dim, bias=False)
        )
        # weight-norm magnitude fixed at 1 (DINO's norm_last_layer): only directions learn
        self.last_layer.parametrizations.weight.original0.data.fill_(1.0)
        if norm_last_layer:
            self.last_layer.parametrizations.weight.original0.requires_grad = False

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(x)
        x = F.normalize(x, dim=-1, p=2)
        return self.last_layer(x)

    def last_layer_parameters(self):
        return list(self.last_layer.parameters())


class MFMHead(nn.Module):
    """1x1 convolution to stride*stride*C channels, then PixelShuffle(stride) (MFM)."""

    def __init__(self, in_dim: int, stride: int, out_chans: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(in_dim, stride * stride * out_chans, kernel_size=1)
        self.shuffle = nn.PixelShuffle(stride)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.proj(feature_map))


def spatial_features(backbone: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Patch tokens (ViT) or the last stage (ResNet) as a (B, D, h, w) map."""
    if tokens.ndim == 4:
        return tokens
    n_prefix = getattr(backbone, "num_prefix_tokens", 1)
    patches = tokens[:, n_prefix:]
    b, n, d = patches.shape
    side = int(math.isqrt(n))
    return patches.transpose(1, 2).reshape(b, d, side, n // side)


@contextmanager
def inference_layout(module: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """``module`` with its weights channels-last while inside, where that is faster: a
    ResNet on the CPU. ResNet-18 at 32 px, one thread, batch 256: 356 -> 636 images/s in
    inference; a training step ran 0.89x, hence only around inference, and the weights go
    back afterwards (the pre-training monitor hands in the teacher). Unmeasured elsewhere
    (CUDA, ViTs), so left as it is there."""
    if device.type != "cpu" or not any(isinstance(m, timm.models.ResNet) for m in module.modules()):
        yield module
        return
    # outside inference mode, whatever the caller's: weights converted inside it would be
    # inference tensors, which a training step after (the pre-training monitor) cannot use
    with torch.inference_mode(False), torch.no_grad():
        module.to(memory_format=torch.channels_last)
    try:
        yield module
    finally:
        with torch.inference_mode(False), torch.no_grad():
            module.to(memory_format=torch.contiguous_format)


def pooled_features(backbone: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The image embedding the DINO head sees: CLS token (ViT) or average pool (ResNet)."""
    return backbone.forward_head(tokens, pre_logits=True)


class Student(nn.Module):
    """Student backbone with its DINO head and MFM head; one backbone pass serves both."""

    def __init__(self, cfg: dict):
        super().__init__()
        m, method = cfg["model"], cfg["method"]
        self.backbone = build_backbone(cfg)
        dim = self.backbone.num_features
        self.dino_head = (
            DINOHead(
                dim,
                m["head_out_dim"],
                m["head_hidden_dim"],
                m["head_bottleneck_dim"],
                m["head_nlayers"],
                m["head_norm_last_layer"],
                m["head_use_bn"],
            )
            if method["distillation"]
            else None
        )
        self.mfm_head = (
            MFMHead(dim, output_stride(cfg), cfg["data"]["in_chans"])
            if method["reconstruction"]
            else None
        )

    def forward(
        self, x: torch.Tensor, reconstruct: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(DINO logits, reconstructed image); a head the variant lacks gives None."""
        tokens = self.backbone.forward_features(x)
        logits = recon = None
        if self.dino_head is not None:
            logits = self.dino_head(pooled_features(self.backbone, tokens))
        if self.mfm_head is not None and reconstruct:
            recon = self.mfm_head(spatial_features(self.backbone, tokens))
        return logits, recon


class Teacher(nn.Module):
    """EMA copy of the student's backbone and DINO head; never receives gradients.

    The backbone is built afresh without stochastic depth or dropout, whatever the
    student's ``model.drop_path`` (DINO's teacher has none), then given the student's
    weights: the teacher's targets are a deterministic function of its input.
    """

    def __init__(self, cfg: dict, student: Student):
        super().__init__()
        # its own RNG fork: building the teacher must not shift the training random stream
        with torch.random.fork_rng(devices=[]):
            self.backbone = build_backbone(cfg, deterministic=True)
        self.backbone.load_state_dict(student.backbone.state_dict(), strict=True)
        self.backbone.to(next(student.backbone.parameters()).device)
        self.dino_head = copy.deepcopy(student.dino_head)
        for p in self.parameters():
            p.requires_grad = False

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dino_head(pooled_features(self.backbone, self.backbone.forward_features(x)))


@torch.no_grad()
def ema_update(teacher: Teacher, student: Student, momentum: float) -> None:
    """teacher <- m * teacher + (1 - m) * student, for parameters only (DINO).

    Buffers are left alone: the teacher's batch-norm running statistics (ResNet backbones,
    ``model.head_use_bn``) come from its own forward passes (train mode, no grad) on the
    unfiltered views, not from the student's statistics of filtered images.
    """
    t_params, s_params = [], []
    for t_mod, s_mod in (
        (teacher.backbone, student.backbone),
        (teacher.dino_head, student.dino_head),
    ):
        t_params += list(t_mod.parameters())
        s_params += list(s_mod.parameters())
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, s_params, alpha=1.0 - momentum)


def build_student_teacher(cfg: dict) -> tuple[Student, Teacher | None]:
    student = Student(cfg)
    teacher = Teacher(cfg, student) if cfg["method"]["distillation"] else None
    return student, teacher
