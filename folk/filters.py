"""Frequency-domain filters that make the student's views (spec, section 1).

Every filter takes a batch ``x`` of shape (B, C, H, W) with values in [0, 1] (before
normalisation) and returns ``(x_filtered, mask)``:

- ``x_filtered``: float32 (B, C, H, W), clamped to [0, 1] (``clamp=True``, the default, as
  MFM does), or ``real(ifft2(F * M))`` as it is with ``clamp=False``;
- ``mask``: float32 (B, 1, H, W) (or (B, C, H, W) for per-channel Com/RCom) in the *centred*
  layout (zero frequency at ``(H // 2, W // 2)``, as after ``torch.fft.fftshift``), with 1 where
  a frequency is kept (visible to the student) and 0 where it is masked. This is the layout
  ``folk.losses.frequency_loss`` expects; the reconstruction loss is taken where mask == 0.

Implementation rules, all for speed on the training device (the filter must cost a few percent
of a training step at most):
- whole batches at once (no loop over images), one ``fft2`` and one ``ifft2`` per batch;
- no host synchronisation (no ``.item()``, no data-dependent shapes);
- fp32 even under autocast: cuFFT rejects half precision for sizes that are not powers of two,
  and magnitude ranking needs the precision;
- randomness only from the ``generator`` argument, which must live on ``x``'s device, so a
  seeded generator reproduces the same views. The order of the draws is part of the contract
  (documented per filter) so that e.g. ``p_com=1`` and ``p_com=0`` with the same seed draw the
  same portions.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from folk.errors import ConfigError, DataError

FILTER_NAMES = ("com_rcom", "mfm", "random_frequency", "random_patch", "none")

# Slack subtracted before ceil(portion * count) so that binary rounding (0.05 * 400 =
# 20.000000000000004) does not add one element: K is the ceiling of the *decimal* product.
_CEIL_SLACK = 1e-9


# ----------------------------------------------------------------------------- helpers


def _check_images(x: torch.Tensor, where: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(f"{where}: expected images of shape (B, C, H, W), got {shape}")
    if not (x.is_floating_point()):
        raise DataError(f"{where}: expected floating-point images in [0, 1], got {x.dtype}")


def _check_generator(generator: torch.Generator, x: torch.Tensor, where: str) -> None:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{where}: generator must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != x.device.type:
        raise ValueError(
            f"{where}: the generator lives on {generator.device} but the images on {x.device}; "
            "create it with torch.Generator(device=x.device)"
        )


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_probability(value: float, key: str) -> None:
    if not _is_real(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{key}: must be a probability in [0, 1], got {value!r}")


def _ceil_count(fraction: float, total: int) -> int:
    """ceil(fraction * total) of the decimal product, clamped to [1, total]."""
    return min(total, max(1, math.ceil(fraction * total - _CEIL_SLACK)))


def _portion_counts(portions: Sequence[float], total: int, key: str = "filter.portions") -> list[int]:
    if _is_real(portions):
        portions = [portions]
    portions = list(portions)
    if not portions:
        raise ConfigError(f"{key}: needs at least one portion, got an empty list")
    for q in portions:
        if not _is_real(q) or not 0.0 < q <= 1.0:
            raise ConfigError(f"{key}: every portion must be in (0, 1], got {q!r}")
    return [_ceil_count(float(q), total) for q in portions]


def _mirror(t: torch.Tensor) -> torch.Tensor:
    """t(-k) in the unshifted FFT layout: index i maps to (-i) mod n on the last two dims."""
    return torch.roll(torch.flip(t, dims=(-2, -1)), shifts=(1, 1), dims=(-2, -1))


def _centre(mask: torch.Tensor) -> torch.Tensor:
    return torch.fft.fftshift(mask, dim=(-2, -1))


def _uncentre(mask: torch.Tensor) -> torch.Tensor:
    return torch.fft.ifftshift(mask, dim=(-2, -1))


def _filter_with_mask(spectrum: torch.Tensor, keep_unshifted: torch.Tensor,
                      clamp: bool = True) -> torch.Tensor:
    """real(ifft2(F * M)) with M in the unshifted layout, clamped to [0, 1] if ``clamp``."""
    filtered = torch.fft.ifft2(spectrum * keep_unshifted).real
    return filtered.clamp_(0.0, 1.0) if clamp else filtered


def _fp32_region(x: torch.Tensor) -> torch.autocast:
    return torch.autocast(device_type=x.device.type, enabled=False)


# ------------------------------------------------------------------------------ Com / RCom


def _top_magnitude_keep(
    spectrum: torch.Tensor, counts: torch.Tensor, max_count: int, per_channel: bool
) -> torch.Tensor:
    """Unshifted boolean M_com = 1[A >= tau], tau the counts[b]-th largest A of image b.

    ``counts``: (B,) long tensor on the device; ``max_count`` a host-side upper bound on it, so
    one ``topk`` of that size serves every image (no sort of the whole spectrum, no sync).
    """
    magnitude = spectrum.abs()
    if not per_channel:
        magnitude = magnitude.mean(dim=1, keepdim=True)
    # |F(k)| = |F(-k)| for real images, but torch's CPU fft2 of a real input differs from its
    # mirror in the last bits (seen on 28x28 photographs), which would split a tied pair at
    # the threshold. Averaging each value with its mirror makes the equality bitwise (a + b ==
    # b + a in IEEE), so ties, and the mask, stay conjugate-symmetric and the output real.
    magnitude = 0.5 * (magnitude + _mirror(magnitude))
    b, c = magnitude.shape[:2]
    flat = magnitude.reshape(b, c, -1)
    top = flat.topk(max_count, dim=-1, largest=True, sorted=True).values
    tau = top.gather(-1, (counts - 1).view(b, 1, 1).expand(b, c, 1))
    return (flat >= tau).view_as(magnitude)


def com_rcom_with_choice(
    x: torch.Tensor,
    portions: Sequence[float],
    p_com: float,
    generator: torch.Generator,
    per_channel: bool = False,
    clamp: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Com/RCom filter (spec 1.1-1.8), also returning which images got Com.

    Per image: q drawn uniformly from ``portions``, K = ceil(q H W), tau = K-th largest of
    A(k) = mean_c |F_c(k)| (|F_c(k)| itself if ``per_channel``), M_com = 1[A >= tau] (ties
    kept, so at least K frequencies), Com (M_com) with probability ``p_com`` else RCom
    (1 - M_com). Random draws, in this order: the portion index per image (``randint``), then
    one uniform per image for the Com/RCom choice (Com iff u < p_com).

    Returns ``(x_filtered, mask, is_com)`` with ``is_com`` a (B,) bool tensor.
    """
    where = "com_rcom"
    _check_images(x, where)
    _check_generator(generator, x, where)
    _check_probability(p_com, "filter.p_com")
    b, _, h, w = x.shape
    counts_table = _portion_counts(portions, h * w)
    with _fp32_region(x):
        images = x.float()
        table = torch.tensor(counts_table, dtype=torch.long, device=x.device)
        pick = torch.randint(len(counts_table), (b,), generator=generator, device=x.device)
        is_com = torch.rand(b, generator=generator, device=x.device) < p_com
        spectrum = torch.fft.fft2(images)
        keep = _top_magnitude_keep(spectrum, table[pick], max(counts_table), per_channel)
        keep = torch.where(is_com.view(b, 1, 1, 1), keep, ~keep).float()
        filtered = _filter_with_mask(spectrum, keep, clamp)
        return filtered, _centre(keep), is_com


def com_rcom(
    x: torch.Tensor,
    portions: Sequence[float],
    p_com: float,
    generator: torch.Generator,
    per_channel: bool = False,
    clamp: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Com/RCom filter: ``(x_filtered, mask)``; see :func:`com_rcom_with_choice`."""
    filtered, mask, _ = com_rcom_with_choice(x, portions, p_com, generator, per_channel, clamp)
    return filtered, mask


def informed_masks(
    x: torch.Tensor,
    q_per_image: float | Sequence[float] | torch.Tensor,
    per_channel: bool = False,
) -> torch.Tensor:
    """The Com mask M_com (centred layout, float) for a given portion per image.

    ``q_per_image``: one portion for every image, a sequence of B portions, or a (B,) tensor
    (tensor values are not range-checked, to avoid a device sync). RCom is ``1 - M_com``.
    """
    _check_images(x, "informed_masks")
    b, _, h, w = x.shape
    total = h * w
    if isinstance(q_per_image, torch.Tensor):
        q = q_per_image.to(device=x.device, dtype=torch.float64).reshape(-1)
        if q.numel() != b:
            raise ValueError(f"informed_masks: {q.numel()} portions for a batch of {b} images")
        counts = torch.ceil(q * total - _CEIL_SLACK).clamp(1, total).long()
        max_count = total  # unknown on the host without a sync: rank the whole spectrum
    else:
        q_list = [q_per_image] * b if _is_real(q_per_image) else list(q_per_image)
        if len(q_list) != b:
            raise ValueError(f"informed_masks: {len(q_list)} portions for a batch of {b} images")
        count_list = _portion_counts(q_list, total, key="q_per_image")
        counts = torch.tensor(count_list, dtype=torch.long, device=x.device)
        max_count = max(count_list)
    with _fp32_region(x):
        spectrum = torch.fft.fft2(x.float())
        keep = _top_magnitude_keep(spectrum, counts, max_count, per_channel)
        return _centre(keep.float())


# ------------------------------------------------------------------------------ MFM


def mfm_low_pass_mask(h: int, w: int, radius: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Centred bool (H, W) low-pass mask: True where (y - H//2)^2 + (x - W//2)^2 < radius^2.

    Strict ``<`` as in MFM's reference ``FreqMaskGenerator``, which masks the frequencies with
    squared distance ``>= radius**2`` in the low-pass case (and keeps exactly those in the
    high-pass case). Distances in float64 so a fractional (size-scaled) radius compares exactly.
    """
    ys = torch.arange(h, dtype=torch.float64, device=device) - h // 2
    xs = torch.arange(w, dtype=torch.float64, device=device) - w // 2
    squared = ys[:, None] ** 2 + xs[None, :] ** 2
    return squared < float(radius) ** 2


def mfm_with_choice(
    x: torch.Tensor, radius: float, generator: torch.Generator, p_low: float = 0.5,
    clamp: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MFM's filters: circular low-pass of ``radius`` (see :func:`mfm_low_pass_mask`) with
    probability ``p_low`` per image, else the high-pass complement. One uniform per image is
    drawn (low-pass iff u < p_low). Returns ``(x_filtered, mask, is_low)``."""
    where = "mfm"
    _check_images(x, where)
    _check_generator(generator, x, where)
    _check_probability(p_low, "filter.mfm_p_low")
    if not _is_real(radius) or not radius > 0:
        raise ConfigError(f"filter.mfm_radius: must be > 0, got {radius!r}")
    b, _, h, w = x.shape
    with _fp32_region(x):
        images = x.float()
        is_low = torch.rand(b, generator=generator, device=x.device) < p_low
        low = mfm_low_pass_mask(h, w, radius, x.device)
        keep_centred = torch.where(is_low.view(b, 1, 1, 1), low, ~low).float()
        filtered = _filter_with_mask(torch.fft.fft2(images), _uncentre(keep_centred), clamp)
        return filtered, keep_centred, is_low


def mfm(
    x: torch.Tensor, radius: float, generator: torch.Generator, p_low: float = 0.5,
    clamp: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MFM low/high-pass filter: ``(x_filtered, mask)``; see :func:`mfm_with_choice`."""
    filtered, mask, _ = mfm_with_choice(x, radius, generator, p_low, clamp)
    return filtered, mask


# ------------------------------------------------------------------------------ random masks


def random_frequency(
    x: torch.Tensor, rho: float, generator: torch.Generator, clamp: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop each frequency with probability ``rho``, one mask per image shared by channels.

    The mask is conjugate-symmetric: k and -k (indices taken modulo H and W, so even sizes'
    Nyquist rows/columns pair correctly) share one uniform draw, that of the member with the
    smaller flat index; self-conjugate frequencies (DC, and the Nyquist points of even sizes)
    get their own draw, so every frequency, DC included, is dropped with probability exactly
    ``rho``. Draws: one (B, 1, H, W) uniform tensor in the unshifted layout.
    """
    where = "random_frequency"
    _check_images(x, where)
    _check_generator(generator, x, where)
    _check_probability(rho, "filter.random_rho")
    b, _, h, w = x.shape
    with _fp32_region(x):
        images = x.float()
        uniform = torch.rand((b, 1, h, w), generator=generator, device=x.device)
        index = torch.arange(h * w, device=x.device).view(h, w)
        own_draw = index <= _mirror(index)
        shared = torch.where(own_draw, uniform, _mirror(uniform))
        keep = (shared >= rho).float()
        filtered = _filter_with_mask(torch.fft.fft2(images), keep, clamp)
        return filtered, _centre(keep)


def random_patch_with_pixel_mask(
    x: torch.Tensor, ratio: float, patch: int, generator: torch.Generator, clamp: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimMIM-style pixel-space masking; returns ``(x_masked, freq_mask, pixel_mask)``.

    The image is cut into a ceil(H/patch) x ceil(W/patch) grid (edge patches are cropped when
    the size is not a multiple of ``patch``); exactly ceil(ratio * N) of the N patches per image
    (SimMIM's count) are chosen uniformly at random and set to 0. ``pixel_mask`` (B, 1, H, W)
    is 1 on visible pixels and 0 on masked ones; ``freq_mask`` is all zeros because every
    frequency of the image has to be recovered. Draws: one (B, N) uniform tensor whose
    ``count`` smallest entries pick the masked patches. Zeroing pixels keeps [0, 1] images
    in [0, 1], so ``clamp`` matters only for inputs outside that range.
    """
    where = "random_patch"
    _check_images(x, where)
    _check_generator(generator, x, where)
    if not _is_real(ratio) or not 0.0 < ratio < 1.0:
        raise ConfigError(f"filter.patch_mask_ratio: must be in (0, 1), got {ratio!r}")
    if isinstance(patch, bool) or not isinstance(patch, numbers.Integral) or patch < 1:
        raise ConfigError(f"filter.patch_mask_size: must be a positive integer, got {patch!r}")
    patch = int(patch)
    b, _, h, w = x.shape
    grid_h, grid_w = math.ceil(h / patch), math.ceil(w / patch)
    n_patches = grid_h * grid_w
    n_masked = _ceil_count(float(ratio), n_patches)
    with _fp32_region(x):
        images = x.float()
        scores = torch.rand((b, n_patches), generator=generator, device=x.device)
        chosen = scores.argsort(dim=1)[:, :n_masked]
        masked = torch.zeros((b, n_patches), dtype=torch.bool, device=x.device)
        masked.scatter_(1, chosen, True)
        masked = masked.view(b, 1, grid_h, grid_w)
        masked = masked.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)[..., :h, :w]
        pixel_mask = (~masked).float()
        filtered = images * pixel_mask
        if clamp:
            filtered = filtered.clamp_(0.0, 1.0)
        freq_mask = torch.zeros((b, 1, h, w), dtype=torch.float32, device=x.device)
        return filtered, freq_mask, pixel_mask


def random_patch(
    x: torch.Tensor, ratio: float, patch: int, generator: torch.Generator, clamp: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random patch masking: ``(x_masked, freq_mask)``; see :func:`random_patch_with_pixel_mask`."""
    filtered, freq_mask, _ = random_patch_with_pixel_mask(x, ratio, patch, generator, clamp)
    return filtered, freq_mask


# ------------------------------------------------------------------------------ dispatch


def apply_filter(
    name: str,
    x: torch.Tensor,
    *,
    generator: torch.Generator,
    portions: Sequence[float] = (0.005, 0.01, 0.05),
    p_com: float = 0.5,
    radius: float = 16.0,
    rho: float = 0.5,
    patch_ratio: float = 0.6,
    patch_size: int = 32,
    per_channel: bool = False,
    p_low: float = 0.5,
    clamp: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the filter ``name`` (one of :data:`FILTER_NAMES`); ``none`` returns the images
    unchanged (as float32) with an all-ones mask. ``p_low``: MFM's low-pass probability;
    ``clamp``: see the module docstring (``none`` ignores it). Size scaling of ``radius``
    and ``patch_size`` is the caller's job."""
    if name == "com_rcom":
        return com_rcom(x, portions, p_com, generator, per_channel=per_channel, clamp=clamp)
    if name == "mfm":
        return mfm(x, radius, generator, p_low=p_low, clamp=clamp)
    if name == "random_frequency":
        return random_frequency(x, rho, generator, clamp=clamp)
    if name == "random_patch":
        return random_patch(x, patch_ratio, patch_size, generator, clamp=clamp)
    if name == "none":
        _check_images(x, "none")
        b, _, h, w = x.shape
        return x.float(), torch.ones((b, 1, h, w), dtype=torch.float32, device=x.device)
    raise ConfigError(f"method.filter: unknown filter {name!r}; choose one of {', '.join(FILTER_NAMES)}")


def centred_log_spectrum(x: torch.Tensor) -> torch.Tensor:
    """log(1 + |fftshift(fft2(x))|) averaged over channels: (B, H, W) float32, for figures."""
    _check_images(x, "centred_log_spectrum")
    with _fp32_region(x):
        magnitude = _centre(torch.fft.fft2(x.float())).abs()
        return torch.log1p(magnitude).mean(dim=1)
