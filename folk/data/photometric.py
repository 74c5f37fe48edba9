"""DINO's photometric augmentation as batched tensor operations with explicit parameters.

A view's photometric randomness is drawn once, as a row of numbers (:func:`draw_params`),
in the data-loader worker, from the RNG that ``folk.engine.data.SeededViews`` seeds with
(seed, epoch, index). The same row then drives the same code wherever it runs
(:func:`apply_photometric`):

- ``augment.photometric: workers``: in the worker, on the one view (a batch of one);
- ``augment.photometric: device``: on the training device, for the whole batch at once,
  the workers doing only decode, crop and flip.

Both give the same views (the parameters are the same numbers, the operations the same
functions), so the choice changes speed, not the experiment, and resume stays exact.

The operations follow torchvision's definitions on float images in [0, 1] (ColorJitter's
four factors applied in a random order, each clamped to [0, 1]; grayscale with ITU-R 601-2
luma; a Gaussian blur with reflect padding and a kernel of ``blur_kernel_size(size)`` taps;
solarisation from 127.5/255 up, which is DINO's 128 after its 8-bit rounding), computed in
float32 without intermediate 8-bit rounding. Blur is separable (two 1-D passes) and hue is
shifted with a closed-form HSV round trip.

On the CPU the operations can run compiled (``augment.compile``, :func:`compile_wanted`):
``torch.compile`` fuses each one into a single C++ loop over the view, ~3x faster for hue
and ~2x for a wide blur than the same operations one tensor pass at a time. Compiled,
every view goes through the operations alone, so that its result never depends on which
other views share its batch; compiled and eager results differ by float32 rounding only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from folk.errors import ConfigError

# columns of a parameter row
JITTER, BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3, 4
ORDER = slice(5, 9)  # the jitter's four operations, as ids in application order
GRAY, BLUR, SIGMA, SOLARIZE = 9, 10, 11, 12
N_PARAMS = 13
OP_BRIGHTNESS, OP_CONTRAST, OP_SATURATION, OP_HUE = 0, 1, 2, 3

LUMA = (0.2989, 0.587, 0.114)
# DINO solarises 8-bit images at 128: a float value rounds to 128 or more from 127.5 up
SOLARIZE_THRESHOLD = 127.5 / 255
SIGMA_RANGE = (0.1, 2.0)  # DINO's blur radius
TAP_FLOOR = 1e-8


def blur_kernel_size(size: int) -> int:
    """DINO blurs 224 px views with a 23 px kernel: about a tenth of the view, odd, >= 3."""
    return max(3, int(0.1 * size) | 1)


class ViewSpec:
    """What may happen to one view: ``augment`` strengths, and the view's own blur and
    solarisation probabilities; colour-only operations are off for one-channel images."""

    def __init__(self, augment: dict, in_chans: int, blur_p: float, solarize_p: float):
        self.rgb = in_chans == 3
        self.jitter_p = float(augment["color_jitter_prob"])
        self.brightness = float(augment["brightness"])
        self.contrast = float(augment["contrast"])
        self.saturation = float(augment["saturation"]) if self.rgb else 0.0
        self.hue = float(augment["hue"]) if self.rgb else 0.0
        self.gray_p = float(augment["grayscale_prob"]) if self.rgb else 0.0
        self.blur_p, self.solarize_p = float(blur_p), float(solarize_p)


def draw_params(spec: ViewSpec, generator: torch.Generator | None = None) -> torch.Tensor:
    """One view's parameter row (float32, ``N_PARAMS``), drawn from ``generator`` (the
    global torch RNG when None). Factors follow torchvision's ColorJitter: brightness and
    contrast uniform in [max(0, 1 - s), 1 + s], saturation likewise, hue in [-h, h]; the
    order is a uniform permutation of the four; sigma uniform in DINO's [0.1, 2]. Every
    draw is made whether or not the operation applies, so one view's draws never shift the
    next view's."""
    coin_j, coin_g, coin_b, coin_s, u_b, u_c, u_s, u_h, u_sigma = torch.rand(
        9, generator=generator
    ).tolist()
    order = torch.randperm(4, generator=generator).tolist()

    def between(u: float, low: float, high: float) -> float:
        return low + u * (high - low)

    row = [0.0] * N_PARAMS
    row[JITTER] = float(coin_j < spec.jitter_p)
    row[BRIGHTNESS] = between(u_b, max(0.0, 1 - spec.brightness), 1 + spec.brightness)
    row[CONTRAST] = between(u_c, max(0.0, 1 - spec.contrast), 1 + spec.contrast)
    row[SATURATION] = between(u_s, max(0.0, 1 - spec.saturation), 1 + spec.saturation)
    row[HUE] = between(u_h, -spec.hue, spec.hue)
    row[ORDER] = [float(op) for op in order]
    row[GRAY] = float(coin_g < spec.gray_p)
    row[BLUR] = float(coin_b < spec.blur_p)
    row[SIGMA] = between(u_sigma, *SIGMA_RANGE)
    row[SOLARIZE] = float(coin_s < spec.solarize_p)
    return torch.tensor(row, dtype=torch.float32)


# ------------------------------------------------------------------ operations


def _on_host(x: torch.Tensor) -> bool:
    """Whether reading ``x``'s values costs nothing (the CPU), or stalls the device."""
    return x.device.type == "cpu"


def _per_image(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) luma of RGB images; a one-channel image is its own luma."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(dim=1)
    # elementwise, not a 1x1 convolution: a convolution's rounding depends on the batch
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """``ratio * x + (1 - ratio) * other`` clamped (torchvision's blend), as one lerp."""
    return torch.lerp(other.expand_as(x), x, _per_image(ratio)).clamp_(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (x * _per_image(factor)).clamp_(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(x, grayscale(x).mean(dim=(-3, -2, -1), keepdim=True), factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(x, grayscale(x), factor)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of RGB images by ``shift`` turns. HSV's hue h (in turns) comes from
    the largest channel's sector; value v and the minimum stay as they are, and channel c
    becomes ``v - (v - min) * clamp(min(k, 4 - k), 0, 1)`` with k = 6 * frac(n_c / 6 + h')
    for n = 5, 3, 1 (HSV's sector formula with v * s = v - min), computed here as
    ``v - 6 (v - min) * clamp(min(k', 2/3 - k'), 0, 1/6)``, k' = k / 6."""
    r, g, b = x.unbind(dim=1)
    v, lo = x.amax(dim=1), x.amin(dim=1)  # amax/amin: max() would also build indices
    delta = v - lo
    # 1 / (6 delta); only grey pixels (delta = 0) meet the floor, and any hue gives them v
    inv = delta.clamp_min(1e-12).reciprocal_().mul_(1 / 6)
    turns = torch.where(
        v == r,
        (g - b).mul_(inv),
        torch.where(v == g, (b - r).mul_(inv).add_(2 / 6), (r - g).mul_(inv).add_(4 / 6)),
    )
    # + 2 keeps the argument of frac positive (frac of a negative number is negative)
    h = torch.frac(turns + (shift.view(-1, 1, 1) + 2.0))
    # 5/6, 3/6, 1/6 made on the device: a tensor from host numbers would be a copy per call
    start = torch.arange(5.0, 0.0, -2.0, dtype=x.dtype, device=x.device).div_(6).view(1, 3, 1, 1)
    k = torch.frac(h.unsqueeze(1) + start)
    ramp = torch.minimum(k, (2 / 3) - k).clamp_(0.0, 1 / 6)
    return torch.addcmul(v.unsqueeze(1), delta.unsqueeze(1), ramp, value=-6.0).clamp_(0.0, 1.0)


def gaussian_kernels(sigma: torch.Tensor, size: int) -> torch.Tensor:
    """(N, size) normalised 1-D Gaussians, one per sigma (torchvision's kernel, its
    negligible tails set to zero)."""
    half = (size - 1) / 2
    t = torch.linspace(-half, half, size, dtype=sigma.dtype, device=sigma.device)
    kernel = torch.exp(-0.5 * (t.view(1, -1) / sigma.view(-1, 1)) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    # taps below 1e-8 cannot move a float32 result in [0, 1] by more than its rounding; made
    # exactly zero, a small sigma needs only its few central taps on the CPU, and an image
    # is blurred the same alone as in a batch whose other images need more taps
    return torch.where(kernel < TAP_FLOOR, 0.0, kernel)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, size: int) -> torch.Tensor:
    """Each image blurred with its own sigma: a horizontal then a vertical pass of a
    ``size``-tap kernel, reflect padding (the 2-D kernel is their outer product).

    On an accelerator one grouped convolution per pass; on the CPU a weighted sum of
    shifted slices, ~2.5x faster there than the grouped convolution for one image."""
    n, c, h, w = x.shape
    pad = size // 2
    kernel = gaussian_kernels(sigma.to(x.dtype), size)  # (N, size)
    if not _on_host(x):
        weights = kernel.repeat_interleave(c, dim=0)
        flat = x.reshape(1, n * c, h, w)
        flat = F.conv2d(
            F.pad(flat, (pad, pad, 0, 0), mode="reflect"),
            weights.view(n * c, 1, 1, size),
            groups=n * c,
        )
        flat = F.conv2d(
            F.pad(flat, (0, 0, pad, pad), mode="reflect"),
            weights.view(n * c, 1, size, 1),
            groups=n * c,
        )
        return flat.view(n, c, h, w)
    used = [i for i, live in enumerate((kernel > 0).any(dim=0).tolist()) if live]
    taps = kernel.view(n, 1, 1, 1, size)
    # one reflect padding of both sides: filtering rows commutes with copying rows, so the
    # padded rows of the horizontal pass are the vertical pass's padding
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    out = padded[..., used[0] : used[0] + w] * taps[..., used[0]]
    for i in used[1:]:
        out.addcmul_(padded[..., i : i + w], taps[..., i])
    padded = out
    out = padded[..., used[0] : used[0] + h, :] * taps[..., used[0]]
    for i in used[1:]:
        out.addcmul_(padded[..., i : i + h, :], taps[..., i])
    return out


def solarize(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= SOLARIZE_THRESHOLD, 1.0 - x, x)


def _gray_views(x: torch.Tensor) -> torch.Tensor:
    return grayscale(x).expand_as(x)


# the operations by name; ``_compiled_ops`` holds the same names compiled
EAGER_OPS = {
    "brightness": adjust_brightness,
    "contrast": adjust_contrast,
    "saturation": adjust_saturation,
    "hue": adjust_hue,
    "grayscale": _gray_views,
    "blur": gaussian_blur,
    "solarize": solarize,
}
_JITTER_OPS = {
    OP_BRIGHTNESS: (BRIGHTNESS, "brightness"),
    OP_CONTRAST: (CONTRAST, "contrast"),
    OP_SATURATION: (SATURATION, "saturation"),
    OP_HUE: (HUE, "hue"),
}


def _steps(rgb: bool, kernel_size: int, ops: dict):
    """(jitter position or None, jitter op or None, column, function of (images, their
    parameter rows)) of every operation in application order: the jitter's four positions,
    then grayscale, blur and solarisation; ``ops`` maps the operations' names to their
    functions (``EAGER_OPS`` or the compiled ones)."""
    for position in range(4):
        for op, (column, name) in _JITTER_OPS.items():
            if rgb or op in (OP_BRIGHTNESS, OP_CONTRAST):
                yield (
                    position,
                    op,
                    column,
                    lambda t, p, fn=ops[name], column=column: fn(t, p[:, column]),
                )
    if rgb:
        yield None, None, GRAY, lambda t, p: ops["grayscale"](t)
    yield None, None, BLUR, lambda t, p: ops["blur"](t, p[:, SIGMA], kernel_size)
    yield None, None, SOLARIZE, lambda t, p: ops["solarize"](t)


def apply_photometric(
    x: torch.Tensor, params: torch.Tensor, kernel_size: int, compiled: bool = False
) -> torch.Tensor:
    """Views ``x`` (N, C, H, W) float in [0, 1] through their parameter rows ``params``
    (N, ``N_PARAMS``): colour jitter in each row's order, grayscale, blur, solarisation.

    On the CPU the rows are read on the host (free there) and each operation runs on the
    images that need it only; with ``compiled`` (:func:`compile_wanted`) each image runs
    alone through the compiled operations. On an accelerator every operation runs on the
    whole batch and is selected on the device, so that the step never waits for the host
    (``compiled`` does not apply there). Each image's result is the same alone as in any
    batch."""
    params = params.to(device=x.device, dtype=torch.float32)
    rgb = x.shape[1] == 3
    if _on_host(x):
        if compiled:
            # contiguous: a compiled kernel is made for its input's strides, and a crop may
            # come channels-last from the workers but as part of a contiguous batch here
            ops = _compiled_ops()
            views = [
                _on_host_rows(x[i : i + 1].contiguous(), params[i : i + 1], rgb, kernel_size, ops)
                for i in range(len(x))
            ]
            return views[0] if len(views) == 1 else torch.cat(views)
        return _on_host_rows(x, params, rgb, kernel_size, EAGER_OPS)
    order = params[:, ORDER].round().long()
    jitter = params[:, JITTER] > 0
    for position, op, column, fn in _steps(rgb, kernel_size, EAGER_OPS):
        chosen = params[:, column] > 0 if op is None else jitter & (order[:, position] == op)
        x = torch.where(_per_image(chosen), fn(x, params), x)
    return x


def _on_host_rows(
    x: torch.Tensor, params: torch.Tensor, rgb: bool, kernel_size: int, ops: dict
) -> torch.Tensor:
    rows = params.tolist()
    for position, op, column, fn in _steps(rgb, kernel_size, ops):
        if op is None:
            wanted = [i for i, row in enumerate(rows) if row[column] > 0]
        else:
            wanted = [
                i
                for i, row in enumerate(rows)
                if row[JITTER] > 0 and round(row[ORDER.start + position]) == op
            ]
        if len(wanted) == len(rows):
            x = fn(x, params)
        elif wanted:
            index = torch.tensor(wanted)
            x = x.index_copy(0, index, fn(x[index], params[index]))
    return x


# ------------------------------------------------------------------ compiled on the CPU


def _tap_sums(padded: torch.Tensor, taps: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """sum_i taps[..., i] * padded.narrow(dim, i, length), every tap (zeros included)."""
    out = padded.narrow(dim, 0, length) * taps[..., 0]
    for i in range(1, taps.shape[-1]):
        out = out + padded.narrow(dim, i, length) * taps[..., i]
    return out


def _blur_through(sums):
    """gaussian_blur with its two passes done by ``sums`` (``_tap_sums`` compiled): every
    tap of the kernel, at 0.47-0.66 ms for any sigma on a 224 px view on one core, where the
    eager passes take 0.36 ms at sigma 0.3 (5 live taps) to 1.52 ms at 2.0 (23)."""

    def blur(x: torch.Tensor, sigma: torch.Tensor, size: int) -> torch.Tensor:
        n, _, h, w = x.shape
        pad = size // 2
        taps = gaussian_kernels(sigma.to(x.dtype), size).view(n, 1, 1, 1, size)
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")  # as gaussian_blur pads
        return sums(sums(padded, taps, w, 3), taps, h, 2)

    return blur


_COMPILED: dict = {}  # per process, made on first use: compiled functions are not pickled


def _compiled_ops() -> dict:
    if not _COMPILED:
        # static shapes: one kernel per view size (the global and the local crops), each
        # the fastest for its size (dynamic shapes measured 9x slower for the blur)
        compiled = {
            name: torch.compile(fn, dynamic=False)
            for name, fn in EAGER_OPS.items()
            if name != "blur"
        }
        compiled["blur"] = _blur_through(torch.compile(_tap_sums, dynamic=False))
        _COMPILED.update(compiled)
    return _COMPILED


def cpp_compiler() -> str | None:
    """The C++ compiler ``torch.compile``'s CPU backend would use, or None."""
    try:
        # inductor is heavy and only torch.compile uses it
        from torch._inductor.cpp_builder import get_cpp_compiler  # noqa: PLC0415

        return get_cpp_compiler()
    except Exception:  # the lookup raises its own error types when none is found
        return None


def compile_wanted(setting: str) -> bool:
    """``augment.compile``: ``on`` (a ConfigError now, before any work, when no C++
    compiler is found), ``off``, or ``auto`` (on when a compiler is found)."""
    if setting == "off":
        return False
    found = cpp_compiler() is not None
    if setting == "on" and not found:
        raise ConfigError(
            "augment.compile: on needs a C++ compiler for torch.compile on the "
            "CPU, and none was found (install g++, or set CXX); or set "
            "augment.compile: off"
        )
    return found


def to_unit_float(views: torch.Tensor) -> torch.Tensor:
    """uint8 views (as the workers send them with ``augment.photometric: device``) to
    float32 in [0, 1]; float views pass through."""
    # times 1/255, as torchvision's ToDtype(scale=True) does (x / 255 rounds differently)
    return views.float().mul_(1.0 / 255) if views.dtype == torch.uint8 else views
