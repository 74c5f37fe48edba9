"""The half-spectrum filters (rfft2 / irfft2) against a full-spectrum re-derivation in numpy.

Each filter's random draws are replayed from the same seed in the documented order, its mask
is rebuilt from the full ``numpy.fft.fft2`` spectrum in float64 (ranking, disc, shared
uniforms, patches), and the view is ``real(ifft2(fft2(x) * M))``, clipped or not. Sizes cover
every parity of H and W, so the Nyquist row and column of even sizes and the unpaired last
column of odd widths are all exercised.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata

from folk import filters

torch.set_num_threads(1)

SIZES = [(32, 32), (33, 31), (28, 17), (17, 28), (16, 15), (15, 16)]
SEEDS = [0, 1, 2]
PORTIONS = (0.005, 0.01, 0.05, 0.3)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(h: int, w: int, seed: int, channels: int = 3) -> torch.Tensor:
    """Four photographs (flipped by seed) and two noise images, (6, channels, h, w) in [0, 1]."""
    out = []
    for name in ("astronaut", "camera", "chelsea", "coffee"):
        array = getattr(skdata, name)().astype(np.float32) / 255.0
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=2)
        image = torch.from_numpy(array).permute(2, 0, 1)[None, :channels]
        out.append(F.interpolate(image, size=(h, w), mode="bilinear", antialias=True))
    photos = torch.cat(out).clamp(0, 1)
    if seed % 2:
        photos = photos.flip(-1)
    noise = torch.rand((2, channels, h, w), generator=gen(1000 + seed))
    return torch.cat([photos, noise])


def full_filter(x: torch.Tensor, centred_mask: np.ndarray, clamp: bool) -> np.ndarray:
    spectrum = np.fft.fft2(x.double().numpy(), axes=(-2, -1))
    keep = np.fft.ifftshift(centred_mask, axes=(-2, -1))
    out = np.fft.ifft2(spectrum * keep, axes=(-2, -1))
    assert np.abs(out.imag).max() < 1e-9  # the mask is conjugate-symmetric: a real image
    return np.clip(out.real, 0, 1) if clamp else out.real


def mirror_index(h: int, w: int):
    return (-np.arange(h)) % h, (-np.arange(w)) % w


def check(result, x, expected_mask: np.ndarray, clamp: bool) -> None:
    out, mask = result[0], result[1]
    np.testing.assert_array_equal(mask.numpy(), expected_mask)
    assert mask.dtype == torch.float32 and mask.is_contiguous()
    np.testing.assert_allclose(
        out.double().numpy(), full_filter(x, expected_mask, clamp), rtol=0, atol=2e-5
    )
    # a real tensor of its own, not a strided view into a complex buffer
    assert out.dtype == torch.float32 and out.is_contiguous() and out.shape == x.shape
    assert out.untyped_storage().nbytes() == out.numel() * out.element_size()


# ------------------------------------------------------------------------------ Com / RCom


def numpy_com_rcom(x: torch.Tensor, portions, p_com: float, seed: int, per_channel: bool):
    b, c, h, w = x.shape
    g = gen(seed)  # the documented draws: portion indices, then one uniform per image
    pick = torch.randint(len(portions), (b,), generator=g).numpy()
    is_com = (torch.rand(b, generator=g) < p_com).numpy()
    magnitude = np.abs(np.fft.fft2(x.double().numpy(), axes=(-2, -1)))
    if not per_channel:
        magnitude = magnitude.mean(axis=1, keepdims=True)
    rows, cols = mirror_index(h, w)
    magnitude = 0.5 * (magnitude + magnitude[:, :, rows][:, :, :, cols])  # ties of k and -k
    masks = np.zeros(magnitude.shape)
    for i in range(b):
        k = math.ceil(Fraction(str(portions[pick[i]])) * h * w)
        for ch in range(magnitude.shape[1]):
            a = magnitude[i, ch]
            tau = np.sort(a.ravel())[::-1][k - 1]
            com = a >= tau
            masks[i, ch] = com if is_com[i] else ~com
    return np.fft.fftshift(masks, axes=(-2, -1)), is_com


@pytest.mark.parametrize("h,w", SIZES)
@pytest.mark.parametrize("per_channel", [False, True])
def test_com_rcom_equals_the_full_spectrum_filter(h, w, per_channel):
    for seed in SEEDS:
        x = images(h, w, seed)
        clamp = seed != 1
        expected, is_com = numpy_com_rcom(x, PORTIONS, 0.5, seed, per_channel)
        result = filters.com_rcom_with_choice(x, PORTIONS, 0.5, gen(seed), per_channel, clamp)
        check(result, x, expected, clamp)
        np.testing.assert_array_equal(result[2].numpy(), is_com)


@pytest.mark.parametrize("h,w", SIZES)
def test_com_rcom_of_one_channel_images_equals_the_full_spectrum_filter(h, w):
    """One channel: the ranking by |F|^2 needs no square root; the order is |F|'s."""
    for seed in SEEDS:
        x = images(h, w, seed, channels=1)
        expected, _ = numpy_com_rcom(x, PORTIONS, 0.5, seed, per_channel=False)
        check(filters.com_rcom(x, PORTIONS, 0.5, gen(seed)), x, expected, True)


@pytest.mark.parametrize("h,w", SIZES)
def test_informed_masks_equal_the_full_spectrum_ranking(h, w):
    x = images(h, w, 0)
    qs = [0.005, 0.01, 0.05, 0.2, 0.5, 1.0]
    b, _, _, _ = x.shape
    magnitude = np.abs(np.fft.fft2(x.double().numpy(), axes=(-2, -1))).mean(axis=1)
    rows, cols = mirror_index(h, w)
    magnitude = 0.5 * (magnitude + magnitude[:, rows][:, :, cols])
    expected = np.zeros((b, 1, h, w))
    for i, q in enumerate(qs):
        k = math.ceil(Fraction(str(q)) * h * w)
        expected[i, 0] = magnitude[i] >= np.sort(magnitude[i].ravel())[::-1][k - 1]
    expected = np.fft.fftshift(expected, axes=(-2, -1))
    for portions in (qs, torch.tensor(qs)):  # a host list, and a tensor (whole ranking)
        np.testing.assert_array_equal(filters.informed_masks(x, portions).numpy(), expected)


# ------------------------------------------------------------------------------ MFM


@pytest.mark.parametrize("h,w", SIZES)
def test_mfm_equals_the_full_spectrum_filter(h, w):
    for seed in SEEDS:
        x = images(h, w, seed)
        radius = [2.5, 4.0, 16 * h / 224][seed]
        low = np.zeros((h, w))
        for y in range(h):
            for xx in range(w):
                low[y, xx] = (y - h // 2) ** 2 + (xx - w // 2) ** 2 < radius**2
        is_low = (torch.rand(x.shape[0], generator=gen(seed)) < 0.5).numpy()
        expected = np.stack([low if flag else 1 - low for flag in is_low])[:, None]
        clamp = seed != 2
        result = filters.mfm_with_choice(x, radius, gen(seed), p_low=0.5, clamp=clamp)
        check(result, x, expected, clamp)
        np.testing.assert_array_equal(result[2].numpy(), is_low)


# ------------------------------------------------------------------------------ random masks


@pytest.mark.parametrize("h,w", SIZES)
def test_random_frequency_equals_the_full_spectrum_filter(h, w):
    for seed in SEEDS:
        x = images(h, w, seed)
        b = x.shape[0]
        uniform = torch.rand((b, 1, h, w), generator=gen(seed)).numpy()
        keep = np.zeros((b, 1, h, w))
        for i in range(h):  # each pair shares the draw of its member with the smaller index
            for j in range(w):
                pi, pj = (-i) % h, (-j) % w
                source = (i, j) if i * w + j <= pi * w + pj else (pi, pj)
                keep[:, 0, i, j] = uniform[:, 0, source[0], source[1]] >= 0.4
        expected = np.fft.fftshift(keep, axes=(-2, -1))
        clamp = seed != 0
        check(filters.random_frequency(x, 0.4, gen(seed), clamp=clamp), x, expected, clamp)


@pytest.mark.parametrize("h,w", SIZES)
def test_random_patch_and_none_are_unchanged_pixel_operations(h, w):
    for seed in SEEDS:
        x = images(h, w, seed)
        b, patch, ratio = x.shape[0], 4, 0.5
        grid_h, grid_w = math.ceil(h / patch), math.ceil(w / patch)
        scores = torch.rand((b, grid_h * grid_w), generator=gen(seed)).numpy()
        n_masked = math.ceil(Fraction(str(ratio)) * grid_h * grid_w)
        pixel = np.ones((b, 1, h, w), dtype=np.float32)
        for i in range(b):
            for cell in np.argsort(scores[i], kind="stable")[:n_masked]:
                gy, gx = divmod(int(cell), grid_w)
                pixel[i, 0, gy * patch : (gy + 1) * patch, gx * patch : (gx + 1) * patch] = 0
        out, freq, pixel_mask = filters.random_patch_with_pixel_mask(x, ratio, patch, gen(seed))
        np.testing.assert_array_equal(pixel_mask.numpy(), pixel)
        np.testing.assert_array_equal(out.numpy(), x.numpy() * pixel)
        assert not freq.any() and out.is_contiguous()
        none, ones = filters.apply_filter("none", x, generator=gen(seed))
        assert torch.equal(none, x) and bool(ones.all())


def test_views_stay_differentiable():
    """The ranking runs without autograd and the spectrum is masked in place; the view is
    still a differentiable function of the images (the masked spectrum's inverse)."""
    x = images(16, 15, 0).requires_grad_(True)
    for name in ("com_rcom", "mfm", "random_frequency"):
        out, mask = filters.apply_filter(name, x, generator=gen(0), radius=4.0, clamp=False)
        weights = torch.rand(out.shape, generator=gen(1), dtype=torch.float64)
        (grad,) = torch.autograd.grad((out * weights.float()).sum(), x)
        # the adjoint of x -> real(ifft2(M fft2(x))) for a real symmetric M is itself
        expected = full_filter(torch.from_numpy(weights.numpy()), mask.double().numpy(), False)
        np.testing.assert_allclose(grad.double().numpy(), expected, rtol=0, atol=1e-5)
