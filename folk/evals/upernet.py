"""Segmentation networks on a pre-trained backbone: UperNet (BEiT/MAE protocol) and a linear
head on patch tokens (the cheap protocol).

Feature pyramids
- ViT: the outputs of 4 blocks (``eval.segmentation.out_indices``), patch tokens reshaped to
  maps at the patch stride p, then rescaled to strides 4, 8, 16, 32 as in BEiT/MAE (at
  p = 16: two x2 deconvolutions, one x2 deconvolution, identity, 2x2 max-pool). A ViT
  shallower than an index asks for uses blocks spread evenly instead (``vit_block_indices``).
- ResNet: stages C2-C5 (strides 4, 8, 16, 32) from timm's ``forward_intermediates``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from folk.models import spatial_features

RESNET_STAGES = (1, 2, 3, 4)  # timm ResNet intermediates: 0 = stem, 1..4 = C2..C5
POOL_SCALES = (1, 2, 3, 6)  # pyramid pooling module bins (PSPNet, UperNet)
AUX_CHANNELS = 256  # auxiliary FCN head width (mmseg's BEiT/MAE configs)
AUX_LEVEL = 2  # pyramid level the auxiliary head reads (stride 16)


def vit_block_indices(depth: int, out_indices: list[int]) -> list[int]:
    """Blocks whose outputs feed the pyramid.

    The configured indices when all exist (``[3, 5, 7, 11]`` for a 12-block ViT). Otherwise
    ``n = len(out_indices)`` blocks spread evenly up to the last one,
    ``ceil((i + 1) * depth / n) - 1`` for ``i < n``: depth 6 gives [1, 2, 4, 5], depth 4
    gives [0, 1, 2, 3], depth 2 gives [0, 0, 1, 1] (a block may feed two levels)."""
    if depth < 1:
        raise ValueError(f"ViT depth must be >= 1, got {depth}")
    if all(0 <= i < depth for i in out_indices):
        return list(out_indices)
    n = len(out_indices)
    return [math.ceil((i + 1) * depth / n) - 1 for i in range(n)]


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


# ---------------------------------------------------------------- feature pyramids


def _rescaler(dim: int, shift: int) -> nn.Module:
    """x2 deconvolutions (``shift > 0``, BN + GELU between them), identity, or max-pool by
    ``2 ** -shift``: BEiT/MAE's fpn1..fpn4 are shifts 2, 1, 0, -1."""
    if shift == 0:
        return nn.Identity()
    if shift < 0:
        return nn.MaxPool2d(2**-shift, stride=2**-shift)
    layers: list[nn.Module] = []
    for i in range(shift):
        if i:
            layers += [nn.BatchNorm2d(dim), nn.GELU()]
        layers.append(nn.ConvTranspose2d(dim, dim, 2, stride=2))
    return nn.Sequential(*layers)


class ViTPyramid(nn.Module):
    """Blocks of a timm ViT -> 4 maps at strides 4, 8, 16, 32.

    Level k is rescaled from the patch stride p by ``log2(p) - log2(4 * 2**k)`` octaves
    (p rounded to a power of two): deconv x4, deconv x2, identity, max-pool /2 at p = 16
    (BEiT/MAE); identity, /2, /4, /8 at p = 4, so small-patch ViTs are not upsampled to
    stride 1 (costly, and finer than the protocol's stride 4)."""

    STRIDES = (4, 8, 16, 32)

    def __init__(self, backbone: nn.Module, out_indices: list[int]):
        super().__init__()
        self.backbone = backbone
        self.indices = vit_block_indices(len(backbone.blocks), out_indices)
        if len(self.indices) != len(self.STRIDES):
            raise ValueError(f"UperNet takes 4 ViT blocks, got out_indices {out_indices}")
        dim = backbone.embed_dim
        patch = backbone.patch_embed.patch_size[0]
        octave = round(math.log2(patch))
        self.rescale = nn.ModuleList(
            _rescaler(dim, octave - int(math.log2(s))) for s in self.STRIDES
        )
        self.channels = [dim] * 4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        unique = sorted(set(self.indices))  # timm returns each requested block once
        maps = dict(
            zip(
                unique,
                self.backbone.forward_intermediates(x, indices=unique, intermediates_only=True),
            )
        )
        return [op(maps[i]) for op, i in zip(self.rescale, self.indices)]


class ResNetPyramid(nn.Module):
    """A timm ResNet's stages C2-C5."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.channels = [backbone.feature_info[i]["num_chs"] for i in RESNET_STAGES]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone.forward_intermediates(
            x, indices=list(RESNET_STAGES), intermediates_only=True
        )


# ---------------------------------------------------------------- heads


class PyramidPooling(nn.Module):
    """PPM: average-pool to each bin size, 1x1 conv, upsample, concatenate with the input."""

    def __init__(self, in_ch: int, channels: int, scales=POOL_SCALES):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), conv_bn_relu(in_ch, channels, 1)) for s in scales
        )
        self.out_channels = in_ch + len(scales) * channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return torch.cat([x] + [_resize(b(x), size) for b in self.branches], dim=1)


class UperHead(nn.Module):
    """UperNet decoder: PPM on the coarsest level, FPN laterals with a top-down pathway,
    3x3 convs per level, all levels upsampled to the finest and fused, then a 1x1
    classifier. Logits come at the finest level's resolution."""

    def __init__(
        self, in_channels: list[int], channels: int, num_classes: int, dropout: float = 0.1
    ):
        super().__init__()
        self.ppm = PyramidPooling(in_channels[-1], channels)
        self.ppm_bottleneck = conv_bn_relu(self.ppm.out_channels, channels, 3)
        self.laterals = nn.ModuleList(conv_bn_relu(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(
            conv_bn_relu(channels, channels, 3) for _ in in_channels[:-1]
        )
        self.fuse = conv_bn_relu(len(in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        levels = [lat(f) for lat, f in zip(self.laterals, features[:-1])]
        levels.append(self.ppm_bottleneck(self.ppm(features[-1])))
        for i in range(len(levels) - 1, 0, -1):  # top-down: coarse into fine
            levels[i - 1] = levels[i - 1] + _resize(levels[i], levels[i - 1].shape[-2:])
        outs = [conv(lv) for conv, lv in zip(self.fpn_convs, levels[:-1])] + [levels[-1]]
        size = outs[0].shape[-2:]
        fused = self.fuse(torch.cat([outs[0]] + [_resize(o, size) for o in outs[1:]], dim=1))
        return self.classifier(self.dropout(fused))


class FCNAuxHead(nn.Module):
    """Auxiliary head of the protocol: 3x3 conv-BN-ReLU and a 1x1 classifier (training only)."""

    def __init__(
        self, in_ch: int, num_classes: int, channels: int = AUX_CHANNELS, dropout: float = 0.1
    ):
        super().__init__()
        self.conv = conv_bn_relu(in_ch, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.conv(x)))


# ---------------------------------------------------------------- full networks


class UperNetSegmenter(nn.Module):
    """Backbone pyramid + UperNet (+ auxiliary FCN head); logits at the input size."""

    def __init__(
        self,
        backbone: nn.Module,
        resnet: bool,
        num_classes: int,
        channels: int,
        out_indices: list[int],
        aux: bool = True,
    ):
        super().__init__()
        self.pyramid = ResNetPyramid(backbone) if resnet else ViTPyramid(backbone, out_indices)
        self.head = UperHead(self.pyramid.channels, channels, num_classes)
        self.aux_head = FCNAuxHead(self.pyramid.channels[AUX_LEVEL], num_classes) if aux else None

    @property
    def backbone(self) -> nn.Module:
        return self.pyramid.backbone

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, auxiliary logits or None), both at the input size."""
        features = self.pyramid(x)
        size = x.shape[-2:]
        logits = _resize(self.head(features), size)
        aux = _resize(self.aux_head(features[AUX_LEVEL]), size) if self.aux_head else None
        return logits, aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _resize(self.head(self.pyramid(x)), x.shape[-2:])


class LinearSegHead(nn.Module):
    """BatchNorm and a 1x1 convolution over a (B, D, h, w) feature map."""

    def __init__(self, in_ch: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_ch)
        self.classifier = nn.Conv2d(in_ch, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.bn(x))


class LinearSegmenter(nn.Module):
    """Frozen backbone; a linear head on the last block's (normed) patch tokens, or on C5
    for a ResNet; logits upsampled bilinearly to the input size."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone.requires_grad_(False)
        self.head = LinearSegHead(backbone.num_features, num_classes)

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # frozen: dropout off, BatchNorm statistics fixed
        return self

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.forward(x), None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = spatial_features(self.backbone, self.backbone.forward_features(x))
        return _resize(self.head(features.float()), x.shape[-2:])


def adapt_input_size(backbone: nn.Module, resnet: bool, crop_size: int) -> None:
    """A ViT sees ``crop_size`` inputs: its position embedding is resampled to the crop's
    patch grid (the BEiT/MAE practice at 512 px), so crops are never resized."""
    if not resnet and tuple(backbone.patch_embed.img_size) != (crop_size, crop_size):
        backbone.set_input_size(img_size=(crop_size, crop_size))


def build_segmenter(backbone: nn.Module, resnet: bool, seg: dict) -> nn.Module:
    """The network ``eval.segmentation`` asks for (``head``: upernet | linear)."""
    adapt_input_size(backbone, resnet, seg["crop_size"])
    if seg["head"] == "linear":
        return LinearSegmenter(backbone, seg["num_classes"])
    return UperNetSegmenter(
        backbone,
        resnet,
        seg["num_classes"],
        seg["channels"],
        seg["out_indices"],
        aux=seg["aux_weight"] > 0,
    )
