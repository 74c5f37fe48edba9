"""Networks: timm backbones, DINO projection head, MFM pixel-shuffle head, student/teacher.

Spec, section 2. Backbones come from timm unchanged, so ``backbone.pt`` loads into a plain
``timm.create_model`` with ``backbone_kwargs``.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from folk.errors import RunDirError


def is_resnet(arch: str) -> bool:
    return arch.startswith("resnet")


def backbone_kwargs(cfg: dict) -> dict:
    """Keyword arguments of ``timm.create_model(cfg['model']['arch'], **kwargs)``."""
    m = cfg["model"]
    kwargs = dict(pretrained=False, num_classes=0, in_chans=cfg["data"]["in_chans"],
                  drop_path_rate=m["drop_path"])
    if not is_resnet(m["arch"]):
        kwargs.update(img_size=m["img_size"], patch_size=m["patch_size"])
        for key in ("depth", "embed_dim", "num_heads"):
            if m[key]:
                kwargs[key] = m[key]
    return kwargs


def build_backbone(cfg: dict, drop_path: float | None = None) -> nn.Module:
    import timm

    kwargs = backbone_kwargs(cfg)
    if drop_path is not None:
        kwargs["drop_path_rate"] = drop_path
    return timm.create_model(cfg["model"]["arch"], **kwargs)


def output_stride(cfg: dict) -> int:
    return 32 if is_resnet(cfg["model"]["arch"]) else cfg["model"]["patch_size"]


def load_backbone(run_dir: str | Path, source: str = "teacher", drop_path: float | None = None
                  ) -> tuple[nn.Module, dict]:
    """Build the run's backbone from its ``config.yaml`` and load its final weights."""
    from folk.config import load_run_config

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    name = {"teacher": "backbone.pt", "student": "student_backbone.pt"}[source]
    path = run_dir / name
    if not path.is_file():
        raise RunDirError(f"{run_dir}: no {name}; pre-training has not finished in this run "
                          f"directory")
    backbone = build_backbone(cfg, drop_path=drop_path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = "; ".join(line.strip() for line in first[:4])
        raise RunDirError(f"{path}: weights do not match model.arch={cfg['model']['arch']!r} "
                          f"as configured in {run_dir / 'config.yaml'}: {detail}") from None
    return backbone, cfg


class DINOHead(nn.Module):
    """MLP (GELU) -> bottleneck -> L2 normalise -> weight-normalised prototypes (DINO)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048,
                 bottleneck_dim: int = 256, nlayers: int = 3, norm_last_layer: bool = True):
        super().__init__()
        if nlayers == 1:
            self.mlp = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
            for _ in range(nlayers - 2):
                layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        self.apply(self._init_weights)
        self.last_layer = nn.utils.parametrizations.weight_norm(
            nn.Linear(bottleneck_dim, out_dim, bias=False))
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


def pooled_features(backbone: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The image embedding the DINO head sees: CLS token (ViT) or average pool (ResNet)."""
    return backbone.forward_head(tokens, pre_logits=True)


class StudentTeacher(nn.Module):
    """Student backbone with DINO and MFM heads; teacher backbone with DINO head (EMA)."""

    def __init__(self, cfg: dict):
        super().__init__()
        m, method = cfg["model"], cfg["method"]
        self.reconstruction = bool(method["reconstruction"])
        self.distillation = bool(method["distillation"])
        self.student = build_backbone(cfg)
        dim = self.student.num_features
        heads = {}
        if self.distillation:
            heads["dino"] = DINOHead(dim, m["head_out_dim"], m["head_hidden_dim"],
                                     m["head_bottleneck_dim"], m["head_nlayers"],
                                     m["head_norm_last_layer"])
        if self.reconstruction:
            heads["mfm"] = MFMHead(dim, output_stride(cfg), cfg["data"]["in_chans"])
        self.student_heads = nn.ModuleDict(heads)
        if self.distillation:
            self.teacher = copy.deepcopy(self.student)
            self.teacher_head = copy.deepcopy(self.student_heads["dino"])
            for p in list(self.teacher.parameters()) + list(self.teacher_head.parameters()):
                p.requires_grad = False
        else:
            self.teacher = None
            self.teacher_head = None

    def student_forward(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """One backbone pass serving both heads: (DINO logits, reconstructed image)."""
        tokens = self.student.forward_features(x)
        logits = recon = None
        if self.distillation:
            logits = self.student_heads["dino"](pooled_features(self.student, tokens))
        if self.reconstruction:
            recon = self.student_heads["mfm"](spatial_features(self.student, tokens))
        return logits, recon

    @torch.no_grad()
    def teacher_forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.teacher.forward_features(x)
        return self.teacher_head(pooled_features(self.teacher, tokens))

    def student_modules(self) -> list[nn.Module]:
        return [self.student, self.student_heads]

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """teacher <- m * teacher + (1 - m) * student, parameters and buffers alike."""
        if self.teacher is None:
            return
        pairs = [(self.student, self.teacher), (self.student_heads["dino"], self.teacher_head)]
        for student, teacher in pairs:
            s_params = list(student.parameters())
            t_params = list(teacher.parameters())
            torch._foreach_mul_(t_params, momentum)
            torch._foreach_add_(t_params, s_params, alpha=1.0 - momentum)
            for s_buf, t_buf in zip(student.buffers(), teacher.buffers()):
                t_buf.copy_(s_buf)

    def final_backbones(self) -> tuple[nn.Module, nn.Module]:
        """(teacher-or-student, student): the teacher when there is one (DINO's choice)."""
        return (self.teacher if self.teacher is not None else self.student), self.student
