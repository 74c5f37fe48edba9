"""Frequency-domain filters that make the student's views (spec, section 1).

Every filter takes a batch ``x`` of shape (B, C, H, W) with values in [0, 1] (before
normalisation) and returns ``(x_filtered, mask)``:

- ``x_filtered``: float32 (B, C, H, W), contiguous, clamped to [0, 1] (``clamp=True``, the
  default, as MFM does), or ``real(ifft2(F * M))`` as it is with ``clamp=False``;
- ``mask``: float32 (B, 1, H, W) (or (B, C, H, W) for per-channel Com/RCom) in the *centred*
  layout (zero frequency at ``(H // 2, W // 2)``, as after ``torch.fft.fftshift``), with 1 where
  a frequency is kept (visible to the student) and 0 where it is masked. This is the layout
  ``folk.losses.frequency_loss`` expects; the reconstruction loss is taken where mask == 0.

Implementation rules, all for speed on the training device (the filter must cost a few percent
of a training step at most):
- whole batches at once (no loop over images), one ``rfft2`` and one ``irfft2`` per batch: every
  frequency-domain mask here is conjugate-symmetric (M(k) = M(-k), indices modulo H and W), so
  ``F * M`` is the spectrum of a real image and its half, columns 0..W//2, determines it. The
  masks are made (or ranked) in that half layout and expanded to (H, W) only to be returned;
- no host synchronisation (no ``.item()``, no data-dependent shapes, no tensors made from
  Python data on the device: the few constant tables are built on the device and cached);
- fp32 even under autocast: cuFFT rejects half precision for sizes that are not powers of two,
  and magnitude ranking needs the precision;
- randomness only from the ``generator`` argument, which must live on ``x``'s device, so a
  seeded generator reproduces the same views. The order of the draws is part of the contract
  (documented per filter) so that e.g. ``p_com=1`` and ``p_com=0`` with the same seed draw the
  same portions.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence

import torch

from folk.errors import ConfigError, DataError
from folk.filter_registry import FILTERS, filter_spec

FILTER_NAMES = tuple(FILTERS)

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
        raise TypeError(
            f"{where}: generator must be a torch.Generator, got {type(generator).__name__}"
        )
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


def _portion_counts(
    portions: Sequence[float], total: int, key: str = "filter.portions"
) -> list[int]:
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


def _half_width(w: int) -> int:
    """Columns of ``rfft2``'s half spectrum of a W-wide image: 0..W//2."""
    return w // 2 + 1


def _self_paired_columns(w: int) -> tuple[int, ...]:
    """Half-spectrum columns that hold both members of every conjugate pair, (i, j) and
    (-i, j): column 0, and column W/2 when W is even. A frequency of any other column has
    its partner in the columns that ``rfft2`` leaves out."""
    return (0,) if w % 2 else (0, w // 2)


# Constant tables are cached per device: building them is several small kernels, and a table
# written from Python data (torch.tensor(list, device="cuda")) is a blocking copy from
# pageable host memory, a stream sync per training step.


@functools.lru_cache(maxsize=64)
def _device_long_table(values: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """``values`` as a (len,) int64 tensor on ``device``, written by fills, not copied.
    Shared between calls: read it, never write it."""
    return torch.stack([torch.full((), v, dtype=torch.long, device=device) for v in values])


@functools.lru_cache(maxsize=32)
def _half_layout(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(multiplicity, full_from_half)`` for an H x W spectrum and its half (H, W//2 + 1).

    ``multiplicity`` (H * (W//2 + 1),) int64: how many frequencies of the full spectrum each
    half entry stands for, 1 in the self-paired columns, 2 elsewhere (k and its mirror -k).
    ``full_from_half`` (H * W,) int64: for each frequency of the *centred* full layout, the
    flat half index whose value it takes (its own, or its mirror's when its column is
    beyond W//2). Shared between calls: read them, never write them.
    """
    wh = _half_width(w)
    cols = torch.arange(wh, device=device)
    single = torch.zeros(wh, dtype=torch.bool, device=device)
    for j in _self_paired_columns(w):
        single |= cols == j
    multiplicity = torch.where(single, 1, 2).expand(h, wh).reshape(-1)
    u = ((torch.arange(h, device=device) - h // 2) % h).view(h, 1)  # centred row -> frequency
    v = ((torch.arange(w, device=device) - w // 2) % w).view(1, w)
    stored = v < wh
    row = torch.where(stored, u, (-u) % h)
    col = torch.where(stored, v, w - v)
    return multiplicity, (row * wh + col).reshape(-1)


def _centred_full(half_mask: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """A conjugate-symmetric mask given in the half layout (B, C, H, W//2+1), unshifted, as the
    full (B, C, H, W) in the centred layout."""
    _, full_from_half = _half_layout(h, w, half_mask.device)
    b, c = half_mask.shape[:2]
    return half_mask.reshape(b, c, -1).index_select(-1, full_from_half).view(b, c, h, w)


def _filter_half(
    spectrum: torch.Tensor, keep_half: torch.Tensor, size: tuple[int, int], clamp: bool = True
) -> torch.Tensor:
    """real(ifft2(F * M)) from ``rfft2``'s half spectrum ``F`` and M's half ``keep_half`` (bool,
    unshifted), clamped to [0, 1] if ``clamp``. Overwrites ``spectrum``.

    Exact for a conjugate-symmetric M: ``F * M`` is then Hermitian, the spectrum of a real
    image, which ``irfft2`` inverts; ``s`` gives the width back, which the half cannot tell
    for an odd W. The result is a real, contiguous tensor of its own."""
    filtered = torch.fft.irfft2(spectrum.masked_fill_(~keep_half, 0), s=size)
    return filtered.clamp_(0.0, 1.0) if clamp else filtered


def _fp32_region(x: torch.Tensor) -> torch.autocast:
    return torch.autocast(device_type=x.device.type, enabled=False)


# ------------------------------------------------------------------------------ Com / RCom


def _top_magnitude_keep(
    spectrum: torch.Tensor, counts: torch.Tensor, max_count: int, per_channel: bool, w: int
) -> torch.Tensor:
    """M_com = 1[A >= tau] in the half layout (unshifted, bool), tau the counts[b]-th largest
    A of image b's *full* spectrum.

    ``spectrum``: ``rfft2``'s half (B, C, H, W//2+1) of W-wide images. ``counts``: (B,) long
    tensor on the device; ``max_count`` a host-side upper bound on it, so one ``topk`` serves
    every image (no sort of the whole spectrum, no sync).
    """
    b, c, h, wh = spectrum.shape
    with torch.no_grad():  # a ranking: nothing to differentiate, and the spectrum is reused
        # |F|^2 orders frequencies as |F| does, without a square root per coefficient
        score = spectrum.real.square().addcmul_(spectrum.imag, spectrum.imag)
        if not per_channel and c > 1:
            # the mean of |F_c| over channels, up to the factor 1 / C, which keeps the order
            score = score.sqrt_().sum(dim=1, keepdim=True)
        # |F(k)| = |F(-k)| for real images. A pair split across the columns rfft2 keeps and
        # those it drops is one stored value; but a self-paired column holds both members, and
        # the FFT gives them values that differ in the last bits, which would split a tied pair
        # at the threshold. Averaging each with its mirror makes the equality bitwise (a + b ==
        # b + a in IEEE), so ties, and the mask, stay conjugate-symmetric and the output real.
        for j in _self_paired_columns(w):
            column = score[..., j]
            column.copy_(0.5 * (column + torch.roll(column.flip(-1), 1, dims=-1)))
        rows = score.shape[1]
        flat = score.reshape(b, rows, h * wh)
        # The K-th largest of the full spectrum, from the half: walk the half's values in
        # decreasing order, each counting for its multiplicity (1 or 2), until K is reached.
        # The top ``depth`` half values always reach K: past the H * len(self-paired) values of
        # multiplicity 1, every value adds 2.
        multiplicity, _ = _half_layout(h, w, spectrum.device)
        n_single = h * len(_self_paired_columns(w))
        depth = min(h * wh, max_count, n_single + -(-max_count // 2))
        top = flat.topk(depth, dim=-1, largest=True, sorted=True)
        reached = multiplicity.take(top.indices).cumsum(dim=-1)
        position = (reached < counts.view(b, 1, 1)).sum(dim=-1, keepdim=True)
        tau = top.values.gather(-1, position)
        return (flat >= tau).view(b, rows, h, wh)


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
        table = _device_long_table(tuple(counts_table), x.device)
        pick = torch.randint(len(counts_table), (b,), generator=generator, device=x.device)
        is_com = torch.rand(b, generator=generator, device=x.device) < p_com
        spectrum = torch.fft.rfft2(images)
        com = _top_magnitude_keep(spectrum, table[pick], max(counts_table), per_channel, w)
        keep = com == is_com.view(b, 1, 1, 1)  # Com keeps M_com, RCom its complement
        filtered = _filter_half(spectrum, keep, (h, w), clamp)
        return filtered, _centred_full(keep, h, w).float(), is_com


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
        counts = _device_long_table(tuple(count_list), x.device)
        max_count = max(count_list)
    with _fp32_region(x):
        spectrum = torch.fft.rfft2(x.float())
        keep = _top_magnitude_keep(spectrum, counts, max_count, per_channel, w)
        return _centred_full(keep, h, w).float()


# ------------------------------------------------------------------------------ MFM


def mfm_low_pass_mask(
    h: int, w: int, radius: float, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Centred bool (H, W) low-pass mask: True where (y - H//2)^2 + (x - W//2)^2 < radius^2.

    Strict ``<`` as in MFM's reference ``FreqMaskGenerator``, which masks the frequencies with
    squared distance ``>= radius**2`` in the low-pass case (and keeps exactly those in the
    high-pass case). Distances in float64 so a fractional (size-scaled) radius compares exactly.
    """
    ys = torch.arange(h, dtype=torch.float64, device=device) - h // 2
    xs = torch.arange(w, dtype=torch.float64, device=device) - w // 2
    squared = ys[:, None] ** 2 + xs[None, :] ** 2
    return squared < float(radius) ** 2


@functools.lru_cache(maxsize=32)
def _mfm_masks(
    h: int, w: int, radius: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The low-pass mask centred (H, W) and as rfft2's unshifted half (H, W//2+1), both
    bool; shared between calls: read them, never write them. The disc is symmetric about the
    zero frequency, the Nyquist rows and columns of even sizes included (their frequency is
    -N/2 whichever member of a pair), so its half determines it."""
    low = mfm_low_pass_mask(h, w, radius, device)
    return low, _uncentre(low)[:, : _half_width(w)].contiguous()


def mfm_with_choice(
    x: torch.Tensor,
    radius: float,
    generator: torch.Generator,
    p_low: float = 0.5,
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
        low, low_half = _mfm_masks(h, w, float(radius), x.device)
        choice = is_low.view(b, 1, 1, 1)  # low-pass keeps the disc, high-pass the rest
        filtered = _filter_half(torch.fft.rfft2(images), low_half == choice, (h, w), clamp)
        return filtered, (low == choice).float(), is_low


def mfm(
    x: torch.Tensor,
    radius: float,
    generator: torch.Generator,
    p_low: float = 0.5,
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
        shared = torch.where(_own_draw(h, w, x.device), uniform, _mirror(uniform))
        keep = shared >= rho  # conjugate-symmetric by construction: its half determines it
        half = keep[..., : _half_width(w)]
        filtered = _filter_half(torch.fft.rfft2(images), half, (h, w), clamp)
        return filtered, _centre(keep).float()


@functools.lru_cache(maxsize=32)
def _own_draw(h: int, w: int, device: torch.device) -> torch.Tensor:
    """(H, W) bool, unshifted: whether frequency k uses its own uniform (its flat index is the
    smaller of k's and -k's) rather than its mirror's. Shared: read it, never write it."""
    index = torch.arange(h * w, device=device).view(h, w)
    return index <= _mirror(index)


def random_patch_with_pixel_mask(
    x: torch.Tensor,
    patch_ratio: float,
    patch_size: int,
    generator: torch.Generator,
    clamp: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimMIM-style pixel-space masking; returns ``(x_masked, freq_mask, pixel_mask)``.

    The image is cut into a ceil(H/patch_size) x ceil(W/patch_size) grid (edge patches are
    cropped when the size is not a multiple of ``patch_size``); exactly ceil(patch_ratio * N)
    of the N patches per image (SimMIM's count) are chosen uniformly at random and set to 0. ``pixel_mask`` (B, 1, H, W)
    is 1 on visible pixels and 0 on masked ones; ``freq_mask`` is all zeros because every
    frequency of the image has to be recovered. Draws: one (B, N) uniform tensor whose
    ``count`` smallest entries pick the masked patches. Zeroing pixels keeps [0, 1] images
    in [0, 1], so ``clamp`` matters only for inputs outside that range.
    """
    where = "random_patch"
    _check_images(x, where)
    _check_generator(generator, x, where)
    if not _is_real(patch_ratio) or not 0.0 < patch_ratio < 1.0:
        raise ConfigError(f"filter.patch_mask_ratio: must be in (0, 1), got {patch_ratio!r}")
    if (
        isinstance(patch_size, bool)
        or not isinstance(patch_size, numbers.Integral)
        or patch_size < 1
    ):
        raise ConfigError(f"filter.patch_mask_size: must be a positive integer, got {patch_size!r}")
    patch_size = int(patch_size)
    b, _, h, w = x.shape
    grid_h, grid_w = math.ceil(h / patch_size), math.ceil(w / patch_size)
    n_patches = grid_h * grid_w
    n_masked = _ceil_count(float(patch_ratio), n_patches)
    with _fp32_region(x):
        images = x.float()
        scores = torch.rand((b, n_patches), generator=generator, device=x.device)
        chosen = scores.argsort(dim=1)[:, :n_masked]
        masked = torch.zeros((b, n_patches), dtype=torch.bool, device=x.device)
        masked.scatter_(1, chosen, True)
        masked = masked.view(b, 1, grid_h, grid_w)
        masked = masked.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)[
            ..., :h, :w
        ]
        pixel_mask = (~masked).float()
        filtered = images * pixel_mask
        if clamp:
            filtered = filtered.clamp_(0.0, 1.0)
        freq_mask = torch.zeros((b, 1, h, w), dtype=torch.float32, device=x.device)
        return filtered, freq_mask, pixel_mask


def random_patch(
    x: torch.Tensor,
    patch_ratio: float,
    patch_size: int,
    generator: torch.Generator,
    clamp: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random patch masking: ``(x_masked, freq_mask)``; see :func:`random_patch_with_pixel_mask`."""
    filtered, freq_mask, _ = random_patch_with_pixel_mask(
        x, patch_ratio, patch_size, generator, clamp
    )
    return filtered, freq_mask


def unmasked(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """No masking (the DINO baseline): the images as float32 and an all-ones mask; draws
    nothing."""
    _check_images(x, "none")
    b, _, h, w = x.shape
    return x.float(), torch.ones((b, 1, h, w), dtype=torch.float32, device=x.device)


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
    """Run the filter ``name`` (a row of ``folk.filter_registry.FILTERS``) with those of the
    arguments it takes; ``none`` returns the images unchanged (as float32) with an
    all-ones mask. ``p_low``: MFM's low-pass probability; ``clamp``: see the module
    docstring. Size scaling of ``radius`` and ``patch_size`` is the caller's job."""
    spec = filter_spec(name)
    given = dict(
        portions=portions,
        p_com=p_com,
        radius=radius,
        rho=rho,
        patch_ratio=patch_ratio,
        patch_size=patch_size,
        per_channel=per_channel,
        p_low=p_low,
        clamp=clamp,
    )
    return spec.load()(x, generator=generator, **{k: given[k] for k in spec.arguments})


def centred_log_spectrum(x: torch.Tensor) -> torch.Tensor:
    """log(1 + |fftshift(fft2(x))|) averaged over channels: (B, H, W) float32, for figures."""
    _check_images(x, "centred_log_spectrum")
    with _fp32_region(x):
        magnitude = _centre(torch.fft.fft2(x.float())).abs()
        return torch.log1p(magnitude).mean(dim=1)
