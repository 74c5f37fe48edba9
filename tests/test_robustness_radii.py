"""Robustness radii must mean something at the image size: refused, naming the key, when a
radius keeps only the zero frequency or two radii give the same low-pass filter."""

from __future__ import annotations

import numpy as np
import pytest

from folk.config import check_filter_radii, load_config
from folk.errors import ConfigError


def lowpass_mask(size: int, px: float) -> np.ndarray:
    """Centred low-pass mask written out: squared distance from (size//2, size//2) < px^2."""
    ys, xs = np.mgrid[0:size, 0:size] - size // 2
    return ys**2 + xs**2 < px**2


def cfg(radii, size=32):
    return load_config(
        None,
        [f"model.img_size={size}", "model.patch_size=4", f"eval.robustness.filter_radii={radii}"],
    )


def test_radius_below_one_pixel_is_refused():
    with pytest.raises(ConfigError, match=r"eval\.robustness\.filter_radii.*0\.29 px"):
        check_filter_radii(cfg([2, 4]))
    assert lowpass_mask(32, 2 * 32 / 224).sum() == 1  # only the zero frequency


def test_radii_with_the_same_mask_are_refused():
    a, b = 8 * 32 / 224, 9 * 32 / 224
    assert (lowpass_mask(32, a) == lowpass_mask(32, b)).all()
    with pytest.raises(ConfigError, match=r"8 and 9"):
        check_filter_radii(cfg([8, 9]))


def test_meaningful_radii_pass():
    radii = [14, 28, 56]
    check_filter_radii(cfg(radii))
    masks = [lowpass_mask(32, r * 32 / 224) for r in radii]
    assert len({m.sum() for m in masks}) == 3
    check_filter_radii(load_config(None, []))  # the defaults at 224 px
