"""Figures 1 and 4 of the paper: what each frequency filter keeps of real photographs.

The photographs are scikit-image's bundled samples (astronaut, chelsea, coffee), centre-cropped
to a square and resized to ``size`` px. The filters are ``folk.filters`` itself, each forced to
one branch (``p_com`` / ``p_low`` of 1 or 0), so the figure shows exactly what training uses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import skimage.data
import torch
from skimage.transform import resize

from folk.filters import (
    centred_log_spectrum,
    com_rcom,
    mfm,
    random_frequency,
    random_patch_with_pixel_mask,
)
from folk.report.plotting import FigureInfo, new_blank_figure, save_figure

PHOTOS = ("astronaut", "chelsea", "coffee")


def load_photos(names: tuple[str, ...] = PHOTOS, size: int = 224):
    """(B, 3, size, size) float32 tensor in [0, 1]."""
    out = []
    for name in names:
        img = getattr(skimage.data, name)()
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        h, w = img.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        img = img[top : top + side, left : left + side, :3]
        img = resize(img, (size, size), anti_aliasing=True, preserve_range=False)
        out.append(torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1))
    return torch.stack(out).clamp_(0, 1)


def _panel_rows(x, rows, seed: int):
    """[(label, filtered images, centred frequency mask or None, pixel mask or None)]."""
    out = []
    for label, fn in rows:
        gen = torch.Generator().manual_seed(seed)
        out.append((label, *fn(x, gen)))
    return out


def _display(img):
    """An image for display: a filtered view with little energy left (high-pass, RCom) is
    contrast-stretched so its structure is visible; returns (array, stretch factor)."""
    arr = np.clip(img.permute(1, 2, 0).numpy(), 0, 1)
    top = float(np.percentile(arr, 99.5))
    if 0 < top < 0.5:
        factor = 1.0 / top
        return np.clip(arr * factor, 0, 1), factor
    return arr, 1.0


def _draw(rows, x, names, title: str):
    """One sub-figure per photograph, each a column pair (spectrum, image) per filter row."""
    fig = new_blank_figure()
    fig.suptitle(title, fontsize=13)
    subfigs = fig.subfigures(1, len(names), wspace=0.01)
    spectrum = centred_log_spectrum(x).numpy()
    for j, (name, sub) in enumerate(zip(names, subfigs)):
        sub.suptitle(name, fontsize=12)
        axes = sub.subplots(len(rows), 2, squeeze=False)
        vmax = float(spectrum[j].max())
        for i, (label, filtered, freq_mask, pixel_mask) in enumerate(rows):
            ax_s, ax_i = axes[i, 0], axes[i, 1]
            if pixel_mask is not None:
                ax_s.imshow(pixel_mask[j, 0].numpy(), cmap="gray", vmin=0, vmax=1)
                what = "pixel mask"
            else:
                shown = spectrum[j] if freq_mask is None else spectrum[j] * freq_mask[j, 0].numpy()
                ax_s.imshow(shown, cmap="inferno", vmin=0, vmax=vmax)
                what = "log spectrum × mask" if freq_mask is not None else "log spectrum"
            img, factor = _display(filtered[j])
            ax_i.imshow(img)
            for ax in (ax_s, ax_i):
                ax.set_xticks([])
                ax.set_yticks([])
            ax_s.text(0.02, 0.03, what, color="w", fontsize=7, transform=ax_s.transAxes)
            if factor != 1.0:
                ax_i.text(
                    0.02,
                    0.03,
                    f"display ×{factor:.1f}",
                    color="w",
                    fontsize=7,
                    transform=ax_i.transAxes,
                )
            if j == 0:
                ax_s.set_ylabel(label, fontsize=10)
    return fig


def figure_filters(
    out_dir: Path,
    q: float = 0.05,
    radius: float = 16,
    size: int = 224,
    seed: int = 0,
    names: tuple[str, ...] = PHOTOS,
) -> FigureInfo:
    """Fig. 1: centred log spectra (masked) and restored images of MFM low-pass, MFM
    high-pass, Com and RCom; Com/RCom keep/remove the top ``q`` of frequencies by magnitude."""
    x = load_photos(names, size)
    rows = _panel_rows(
        x,
        [
            ("original", lambda x, g: (x, None, None)),
            (f"MFM low-pass (r={radius:g})", lambda x, g: (*mfm(x, radius, g, p_low=1.0), None)),
            (f"MFM high-pass (r={radius:g})", lambda x, g: (*mfm(x, radius, g, p_low=0.0), None)),
            (f"Com (q={q:g})", lambda x, g: (*com_rcom(x, [q], 1.0, g), None)),
            (f"RCom (q={q:g})", lambda x, g: (*com_rcom(x, [q], 0.0, g), None)),
        ],
        seed,
    )
    fig = _draw(
        rows,
        x,
        names,
        f"Frequency filters on {size} px photographs: MFM's fixed "
        f"circles (radius {radius:g}) against Com/RCom (top {q:g} of frequencies by "
        "magnitude)",
    )
    files = save_figure(fig, out_dir, "fig1_filters")
    return FigureInfo(
        name="fig1_filters",
        title="Fig. 1: MFM low/high-pass against Com/RCom",
        description=f"Centred log-magnitude spectra multiplied by each filter's mask (dark = "
        f"removed) and the filtered images (faint ones contrast-stretched for display, "
        f"factor shown), for MFM's low-pass and high-pass circles "
        f"(radius {radius:g} px at {size} px) and Com/RCom keeping/removing the top "
        f"q = {q:g} of frequencies by magnitude; scikit-image photographs "
        f"({', '.join(names)}) resized to {size} px.",
        datasets=["scikit-image sample photographs"],
        files=[p.name for p in files],
    )


def figure_masking(
    out_dir: Path,
    q: float = 0.05,
    rho: float = 0.5,
    patch_ratio: float = 0.6,
    patch_size: int = 32,
    size: int = 224,
    seed: int = 0,
    names: tuple[str, ...] = PHOTOS,
) -> FigureInfo:
    """Fig. 4: Com/RCom against random frequency masking and random patch masking."""

    def patch(x, g):
        filtered, _, pixel = random_patch_with_pixel_mask(x, patch_ratio, patch_size, g)
        return filtered, None, pixel

    x = load_photos(names, size)
    rows = _panel_rows(
        x,
        [
            (f"Com (q={q:g})", lambda x, g: (*com_rcom(x, [q], 1.0, g), None)),
            (f"RCom (q={q:g})", lambda x, g: (*com_rcom(x, [q], 0.0, g), None)),
            (f"random frequency (rho={rho:g})", lambda x, g: (*random_frequency(x, rho, g), None)),
            (f"random patch ({patch_ratio:.0%}, {patch_size}px)", patch),
        ],
        seed,
    )
    fig = _draw(
        rows, x, names, "Informed (Com/RCom) against random masking, on the same photographs"
    )
    files = save_figure(fig, out_dir, "fig4_masking")
    return FigureInfo(
        name="fig4_masking",
        title="Fig. 4: Com/RCom against random frequency and patch masking",
        description=f"Com/RCom (q = {q:g}) against random frequency masking (each frequency "
        f"dropped with probability {rho:g}, conjugate-symmetric) and random patch "
        f"masking in pixel space ({patch_ratio:.0%} of {patch_size} px patches), "
        f"seed {seed}; masked spectra (pixel mask for patches) and restored images "
        f"of scikit-image photographs ({', '.join(names)}) at {size} px.",
        datasets=["scikit-image sample photographs"],
        files=[p.name for p in files],
    )
