"""Image corruptions and frequency filters for the robustness evaluation.

Every function takes a batch ``x`` of shape (B, C, H, W) with values in [0, 1] (before
normalisation) and returns a float32 batch of the same shape, clamped to [0, 1].

Per-severity parameters come from the two published tables of Hendrycks & Dietterich
(2019): ImageNet-C, stated at 224 px, and CIFAR-10-C, stated at 32 px (at 32 px the
ImageNet-C blur would be nearly the identity: sigma 1 px at 224 px is 0.14 px at 32 px).
``table_for_size`` picks the table whose reference size is nearer (in log scale) to the
model's input size; the blur's sigma is then scaled by ``img_size / reference size``.
Per-pixel parameters (noise level, JPEG quality, contrast factor) do not depend on the size.

| corruption     | parameter                     | imagenet_c (224 px)         | cifar_c (32 px)             |
|----------------|-------------------------------|-----------------------------|-----------------------------|
| gaussian_noise | noise std on [0, 1] pixels    | 0.08 0.12 0.18 0.26 0.38    | 0.04 0.06 0.08 0.09 0.10    |
| gaussian_blur  | sigma in px at the ref. size  | 1 2 3 4 6                   | 0.4 0.6 0.7 0.8 1.0         |
| jpeg           | JPEG quality                  | 25 18 15 10 7               | 80 65 58 50 40              |
| contrast       | factor c: mean + c (x - mean) | 0.4 0.3 0.2 0.1 0.05        | 0.75 0.5 0.4 0.3 0.15       |

Gaussian noise draws one standard normal field per batch from the caller's generator and
scales it by the severity's std, so that, for one seed, a higher severity is the same noise,
only stronger.

The low-/high-pass filters use MFM's centred circular mask (``folk.filters``); their radii are
stated at ``filter.mfm_radius_ref_size`` px and scaled like the pre-training radius.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2.functional import gaussian_blur as tv_blur

from folk.errors import ConfigError, DataError
from folk.filters import mfm_low_pass_mask

CORRUPTIONS = ("gaussian_noise", "gaussian_blur", "jpeg", "contrast")

SEVERITY_TABLES: dict[str, dict] = {
    "imagenet_c": {
        "ref_size": 224,
        "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
        "gaussian_blur": (1.0, 2.0, 3.0, 4.0, 6.0),
        "jpeg": (25, 18, 15, 10, 7),
        "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    },
    "cifar_c": {
        "ref_size": 32,
        "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
        "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
        "jpeg": (80, 65, 58, 50, 40),
        "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    },
}


def table_for_size(img_size: int) -> str:
    """The table whose reference size is nearest to ``img_size`` in log scale."""
    return min(
        SEVERITY_TABLES, key=lambda t: abs(math.log(img_size / SEVERITY_TABLES[t]["ref_size"]))
    )


def _check_images(x: torch.Tensor, where: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        what = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(
            f"{where}: expected floating-point images (B, C, H, W) in [0, 1], got {what}"
        )


def _param(name: str, severity: int, table: str) -> float:
    if table not in SEVERITY_TABLES:
        raise ConfigError(
            f"eval.robustness.severity_table: unknown table {table!r}; choose "
            f"from auto, {', '.join(SEVERITY_TABLES)}"
        )
    if name not in CORRUPTIONS:
        raise ConfigError(
            f"eval.robustness.corruptions: unknown corruption {name!r}; "
            f"choose from {', '.join(CORRUPTIONS)}"
        )
    if not isinstance(severity, int) or isinstance(severity, bool) or not 1 <= severity <= 5:
        raise ConfigError(
            f"eval.robustness.severities: severity must be an integer 1..5, got {severity!r}"
        )
    return SEVERITY_TABLES[table][name][severity - 1]


def scaled_size(value: float, img_size: int, ref_size: float = 224.0) -> float:
    """A length stated at ``ref_size`` px, at ``img_size`` px."""
    return float(value) * float(img_size) / float(ref_size)


# ------------------------------------------------------------------ corruptions


def gaussian_noise(
    x: torch.Tensor, severity: int, generator: torch.Generator, table: str = "imagenet_c"
) -> torch.Tensor:
    _check_images(x, "gaussian_noise")
    std = _param("gaussian_noise", severity, table)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32)
    return (x.float() + std * noise).clamp_(0.0, 1.0)


def gaussian_blur(x: torch.Tensor, severity: int, table: str = "imagenet_c") -> torch.Tensor:
    _check_images(x, "gaussian_blur")
    h, w = x.shape[-2:]
    sigma = scaled_size(
        _param("gaussian_blur", severity, table), min(h, w), SEVERITY_TABLES[table]["ref_size"]
    )
    # +-3 sigma holds 99.7 % of the kernel's mass; reflect padding needs it below the size
    half = min(max(1, math.ceil(3.0 * sigma)), min(h, w) - 1)
    return tv_blur(x.float(), kernel_size=[2 * half + 1] * 2, sigma=[sigma, sigma]).clamp_(0, 1)


def jpeg(x: torch.Tensor, severity: int, table: str = "imagenet_c") -> torch.Tensor:
    """Save each image as a JPEG at the severity's quality with Pillow (as ImageNet-C did,
    default 4:2:0 chroma subsampling for colour) and decode it again, on the CPU."""
    _check_images(x, "jpeg")
    quality = int(_param("jpeg", severity, table))
    as_bytes = (x.detach().float().cpu() * 255.0).round_().clamp_(0, 255).to(torch.uint8)
    out = []
    for img in as_bytes.permute(0, 2, 3, 1).numpy():
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=quality)
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert(pil.mode))
        out.append(torch.from_numpy(decoded.reshape(img.shape).copy()))
    return torch.stack(out).permute(0, 3, 1, 2).float().div_(255.0).to(x.device)


def contrast(x: torch.Tensor, severity: int, table: str = "imagenet_c") -> torch.Tensor:
    """Pull every pixel towards the image's mean intensity (over channels and pixels)."""
    _check_images(x, "contrast")
    c = _param("contrast", severity, table)
    x = x.float()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * c + mean).clamp_(0.0, 1.0)


def corrupt(
    x: torch.Tensor,
    name: str,
    severity: int,
    *,
    table: str = "imagenet_c",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``name`` at ``severity`` (1..5) with the parameters of ``table``; ``generator``
    (on the images' device) is needed by gaussian_noise only."""
    _param(name, severity, table)
    if name == "gaussian_noise":
        if generator is None:
            raise ValueError("gaussian_noise needs a torch.Generator on the images' device")
        return gaussian_noise(x, severity, generator, table)
    return {"gaussian_blur": gaussian_blur, "jpeg": jpeg, "contrast": contrast}[name](
        x, severity, table
    )


# ------------------------------------------------------------------ frequency filters


def _circular_filter(x: torch.Tensor, radius_px: float, keep_low: bool) -> torch.Tensor:
    _check_images(x, "frequency filter")
    if not radius_px > 0:
        raise ConfigError(f"eval.robustness.filter_radii: radius must be > 0, got {radius_px!r}")
    h, w = x.shape[-2:]
    # MFM's centred circular mask (strict <), shared with the pre-training filters
    low = mfm_low_pass_mask(h, w, radius_px, x.device)
    keep = low if keep_low else ~low
    keep = torch.fft.ifftshift(keep.float(), dim=(-2, -1))
    with torch.autocast(device_type=x.device.type, enabled=False):
        spectrum = torch.fft.fft2(x.float())
        return torch.fft.ifft2(spectrum * keep).real.clamp_(0.0, 1.0)


def low_pass(x: torch.Tensor, radius_px: float) -> torch.Tensor:
    """Keep the frequencies within ``radius_px`` of the centred spectrum's origin."""
    return _circular_filter(x, radius_px, keep_low=True)


def high_pass(x: torch.Tensor, radius_px: float) -> torch.Tensor:
    """Remove the frequencies within ``radius_px`` (the DC term included)."""
    return _circular_filter(x, radius_px, keep_low=False)
