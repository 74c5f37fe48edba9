"""Frequency filters checked against numpy re-derivations on real photographs."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata

from folk import filters
from folk.errors import ConfigError, DataError

torch.set_num_threads(1)

PORTIONS = (0.005, 0.01, 0.05)
SIZES = [(64, 64), (28, 28), (33, 31), (32, 17)]


def photos(h: int, w: int) -> torch.Tensor:
    """astronaut, camera (grey, replicated), chelsea as a (3, 3, h, w) batch in [0, 1]."""
    images = []
    for name in ("astronaut", "camera", "chelsea"):
        array = getattr(skdata, name)().astype(np.float32) / 255.0
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=2)
        images.append(torch.from_numpy(array).permute(2, 0, 1))
    resized = [
        F.interpolate(im[None], size=(h, w), mode="bilinear", antialias=True) for im in images
    ]
    return torch.cat(resized).clamp(0, 1)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def exact_count(q: float, h: int, w: int) -> int:
    """K = ceil(q H W) in exact decimal arithmetic."""
    return math.ceil(Fraction(str(q)) * h * w)


def numpy_com_mask(image: np.ndarray, q: float, per_channel: bool = False) -> np.ndarray:
    """Centred M_com of one (C, H, W) image by sorting numpy magnitudes."""
    magnitude = np.abs(np.fft.fft2(image.astype(np.float64), axes=(-2, -1)))
    if not per_channel:
        magnitude = magnitude.mean(axis=0, keepdims=True)
    # |F(k)| = |F(-k)| holds only up to rounding in any FFT; the spec keeps ties, so k and -k
    # must rank together: give both their mean (indices modulo the size).
    h, w = magnitude.shape[-2:]
    rows, cols = (-np.arange(h)) % h, (-np.arange(w)) % w
    magnitude = 0.5 * (magnitude + magnitude[:, rows][:, :, cols])
    k = exact_count(q, *image.shape[-2:])
    masks = []
    for channel in magnitude:
        tau = np.sort(channel.ravel())[::-1][k - 1]
        masks.append(channel >= tau)
    return np.fft.fftshift(np.stack(masks), axes=(-2, -1)).astype(np.float64)


def numpy_apply(image: np.ndarray, centred_mask: np.ndarray) -> np.ndarray:
    """clamp(real(ifft2(fft2(x) * ifftshift(M))), 0, 1) and the largest |imag| before clamping."""
    spectrum = np.fft.fft2(image.astype(np.float64), axes=(-2, -1))
    result = np.fft.ifft2(spectrum * np.fft.ifftshift(centred_mask, axes=(-2, -1)), axes=(-2, -1))
    return np.clip(result.real, 0, 1), np.abs(result.imag).max()


def is_conjugate_symmetric(centred_mask: np.ndarray) -> bool:
    """M(k) == M(-k), checked with explicit index arithmetic in the unshifted layout."""
    m = np.fft.ifftshift(centred_mask, axes=(-2, -1))
    h, w = m.shape[-2:]
    for i in range(h):
        for j in range(w):
            if not np.array_equal(m[..., i, j], m[..., (-i) % h, (-j) % w]):
                return False
    return True


# ------------------------------------------------------------------------------ Com / RCom


@pytest.mark.parametrize("h,w", SIZES)
@pytest.mark.parametrize("per_channel", [False, True])
def test_informed_mask_matches_numpy_ranking(h, w, per_channel):
    x = photos(h, w)
    for q in PORTIONS:
        masks = filters.informed_masks(x, q, per_channel=per_channel).numpy()
        assert masks.shape == (3, 3 if per_channel else 1, h, w)
        k = exact_count(q, h, w)
        for b in range(x.shape[0]):
            expected = numpy_com_mask(x[b].numpy(), q, per_channel)
            np.testing.assert_array_equal(masks[b], expected)
            # ties are kept: never fewer than K per (image, channel) mask
            assert (masks[b].reshape(masks.shape[1], -1).sum(1) >= k).all()
            # the strongest coefficient of a natural image is DC
            assert (masks[b][:, h // 2, w // 2] == 1).all()
            assert is_conjugate_symmetric(masks[b])


@pytest.mark.parametrize("h,w", [(64, 64), (33, 31)])
def test_informed_mask_count_on_noise(h, w):
    """On noise the only ties are the conjugate pairs (and self-conjugate points), so the
    kept count is K, or K + 1 when the K-th largest is the first member of a pair."""
    x = torch.rand((6, 3, h, w), generator=gen(3))
    qs = [0.005, 0.01, 0.05, 0.2, 0.5, 1.0]
    masks = filters.informed_masks(x, qs).numpy()
    tensor_masks = filters.informed_masks(x, torch.tensor(qs)).numpy()
    np.testing.assert_array_equal(masks, tensor_masks)
    for b, q in enumerate(qs):
        k = exact_count(q, h, w)
        kept = int(masks[b].sum())
        assert k <= kept <= k + 1
        np.testing.assert_array_equal(masks[b], numpy_com_mask(x[b].numpy(), q))


@pytest.mark.parametrize("h,w", SIZES)
def test_com_and_rcom_partition_and_filter(h, w):
    x = photos(h, w)
    x = torch.cat([x, x.flip(-1), x.flip(-2)])  # 9 images: several portions drawn
    com_x, com_mask, com_flag = filters.com_rcom_with_choice(x, PORTIONS, 1.0, gen(5))
    rcom_x, rcom_mask, rcom_flag = filters.com_rcom_with_choice(x, PORTIONS, 0.0, gen(5))
    assert com_flag.all() and not rcom_flag.any()
    assert com_mask.shape == (9, 1, h, w) and com_mask.dtype == torch.float32
    # same seed -> same portions: the two masks partition the spectrum
    assert torch.equal(com_mask + rcom_mask, torch.ones_like(com_mask))
    assert torch.equal(com_mask * rcom_mask, torch.zeros_like(com_mask))
    counts = {exact_count(q, h, w) for q in PORTIONS}
    for b in range(x.shape[0]):
        m = com_mask[b].numpy()
        kept = int(m.sum())
        # the kept set is exactly the numpy Com mask for one of the portions
        matches = [q for q in PORTIONS if np.array_equal(m, numpy_com_mask(x[b].numpy(), q))]
        assert matches, f"image {b}: Com mask matches no portion (kept {kept}, K in {counts})"
        assert kept >= exact_count(matches[0], h, w)
        assert m[0, h // 2, w // 2] == 1 and rcom_mask[b, 0, h // 2, w // 2] == 0
        for out, mask in ((com_x, com_mask), (rcom_x, rcom_mask)):
            expected, imag = numpy_apply(x[b].numpy(), mask[b].numpy())
            assert imag < 1e-9  # conjugate-symmetric mask: the inverse FFT is real
            np.testing.assert_allclose(out[b].numpy(), expected, atol=2e-5)
            assert out[b].min() >= 0 and out[b].max() <= 1
    # Com keeps the dominant coefficients: it is much closer to the image than RCom
    assert (com_x - x).abs().mean() < (rcom_x - x).abs().mean()


def test_com_rcom_mixes_with_probability():
    x = torch.rand((400, 1, 8, 8), generator=gen(0))
    _, mask, is_com = filters.com_rcom_with_choice(x, [0.05], 0.5, gen(1))
    assert 0.4 < is_com.float().mean() < 0.6
    dc = mask[:, 0, 4, 4]
    # DC of a positive image is its largest coefficient: kept exactly by the Com images
    assert torch.equal(dc.bool(), is_com)
    _, _, few = filters.com_rcom_with_choice(x, [0.05], 0.25, gen(1))
    assert 0.18 < few.float().mean() < 0.32


def test_com_rcom_per_channel_masks_differ_between_channels():
    x = photos(32, 32)
    x[:, 1] = x[:, 1].flip(-1).transpose(-1, -2)  # make channel spectra differ
    _, mask = filters.com_rcom(x, [0.05], 1.0, gen(0), per_channel=True)
    assert mask.shape == (3, 3, 32, 32)
    assert not torch.equal(mask[:, 0], mask[:, 1])
    for b in range(3):
        np.testing.assert_array_equal(mask[b].numpy(), numpy_com_mask(x[b].numpy(), 0.05, True))


# ------------------------------------------------------------------------------ MFM


@pytest.mark.parametrize(
    "h,w,radius", [(64, 64, 16 * 64 / 224), (28, 28, 5), (33, 31, 7.5), (32, 17, 4)]
)
def test_mfm_masks_match_double_loop(h, w, radius):
    expected_low = np.zeros((h, w))
    for y in range(h):
        for xx in range(w):
            if (y - h // 2) ** 2 + (xx - w // 2) ** 2 < radius**2:
                expected_low[y, xx] = 1
    x = photos(h, w)
    low_x, low_mask = filters.mfm(x, radius, gen(0), p_low=1.0)
    high_x, high_mask = filters.mfm(x, radius, gen(0), p_low=0.0)
    for b in range(3):
        np.testing.assert_array_equal(low_mask[b, 0].numpy(), expected_low)
        np.testing.assert_array_equal(high_mask[b, 0].numpy(), 1 - expected_low)
        assert is_conjugate_symmetric(low_mask[b].numpy())
        for out, mask in ((low_x, expected_low), (high_x, 1 - expected_low)):
            ref, imag = numpy_apply(x[b].numpy(), mask)
            assert imag < 1e-9
            np.testing.assert_allclose(out[b].numpy(), ref, atol=2e-5)


def test_mfm_chooses_low_or_high_per_image():
    x = torch.rand((300, 1, 16, 16), generator=gen(0))
    _, mask, is_low = filters.mfm_with_choice(x, 4, gen(2))
    low = filters.mfm_low_pass_mask(16, 16, 4).float()
    for b in range(300):
        assert torch.equal(mask[b, 0], low if is_low[b] else 1 - low)
    assert 0.4 < is_low.float().mean() < 0.6


# ------------------------------------------------------------------------------ random masks


@pytest.mark.parametrize("h,w", [(64, 64), (33, 31), (32, 17)])
def test_random_frequency_symmetry_and_rate(h, w):
    x = photos(h, w)
    x = torch.cat([x] * 4)
    out, mask = filters.random_frequency(x, 0.3, gen(7))
    assert mask.shape == (12, 1, h, w)
    drop_rate = 1 - mask.mean().item()
    assert abs(drop_rate - 0.3) < 0.03
    assert not torch.equal(mask[0], mask[3])  # same image, independent masks
    for b in range(12):
        m = mask[b].numpy()
        assert is_conjugate_symmetric(m)
        ref, imag = numpy_apply(x[b].numpy(), m)
        assert imag < 1e-9
        np.testing.assert_allclose(out[b].numpy(), ref, atol=2e-5)


def test_random_frequency_self_conjugate_points_are_dropped_at_rate_rho():
    # DC and the Nyquist points of an even size have their own draw: dropped with prob rho too
    x = torch.rand((2000, 1, 4, 4), generator=gen(0))
    _, mask = filters.random_frequency(x, 0.5, gen(1))
    for point in [(2, 2), (0, 0), (0, 2), (2, 0)]:  # centred: DC and the three Nyquist points
        assert abs(1 - mask[:, 0, point[0], point[1]].mean().item() - 0.5) < 0.05


@pytest.mark.parametrize("h,w,patch,ratio", [(64, 64, 8, 0.6), (28, 28, 4, 0.75), (33, 31, 8, 0.5)])
def test_random_patch_masks_exact_count(h, w, patch, ratio):
    x = photos(h, w) * 0.9 + 0.05  # strictly positive so masked pixels are recognisable
    out, freq_mask, pixel_mask = filters.random_patch_with_pixel_mask(x, ratio, patch, gen(3))
    assert torch.equal(freq_mask, torch.zeros(3, 1, h, w))
    grid_h, grid_w = math.ceil(h / patch), math.ceil(w / patch)
    n_masked = math.ceil(Fraction(str(ratio)) * grid_h * grid_w)
    layouts = set()
    for b in range(3):
        masked_patches = []
        for gy in range(grid_h):
            for gx in range(grid_w):
                block = pixel_mask[
                    b, 0, gy * patch : (gy + 1) * patch, gx * patch : (gx + 1) * patch
                ]
                assert block.min() == block.max()  # a patch is all visible or all masked
                masked_patches.append(block.max().item() == 0)
                pixels = out[b, :, gy * patch : (gy + 1) * patch, gx * patch : (gx + 1) * patch]
                original = x[b, :, gy * patch : (gy + 1) * patch, gx * patch : (gx + 1) * patch]
                if masked_patches[-1]:
                    assert (pixels == 0).all()
                else:
                    assert torch.equal(pixels, original)
        assert sum(masked_patches) == n_masked
        layouts.add(tuple(masked_patches))
    assert len(layouts) == 3  # random positions per image
    out2, freq2 = filters.random_patch(x, ratio, patch, gen(3))
    assert torch.equal(out, out2) and torch.equal(freq_mask, freq2)


# ------------------------------------------------------------------------------ common contract


FILTER_KWARGS = dict(
    portions=PORTIONS, p_com=0.5, radius=5.0, rho=0.4, patch_ratio=0.5, patch_size=4
)


@pytest.mark.parametrize("name", ["com_rcom", "mfm", "random_frequency", "random_patch"])
def test_determinism_from_generator(name):
    x = torch.cat([photos(28, 28)] * 4)
    a = filters.apply_filter(name, x, generator=gen(11), **FILTER_KWARGS)
    b = filters.apply_filter(name, x, generator=gen(11), **FILTER_KWARGS)
    c = filters.apply_filter(name, x, generator=gen(12), **FILTER_KWARGS)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    for out, mask in (a, c):
        assert out.dtype == torch.float32 and out.shape == x.shape
        assert out.min() >= 0 and out.max() <= 1
        assert mask.shape == (12, 1, 28, 28) and mask.dtype == torch.float32


@pytest.mark.parametrize("name", ["com_rcom", "mfm", "random_frequency", "random_patch", "none"])
def test_filters_compute_in_fp32_under_autocast(name):
    x = photos(33, 31)
    x16 = x.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, mask = filters.apply_filter(name, x16, generator=gen(4), **FILTER_KWARGS)
    ref_out, ref_mask = filters.apply_filter(name, x16.float(), generator=gen(4), **FILTER_KWARGS)
    assert out.dtype == torch.float32 and mask.dtype == torch.float32
    assert torch.equal(mask, ref_mask)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-6)


def test_none_filter_and_errors():
    x = photos(16, 16)
    out, mask = filters.apply_filter("none", x, generator=gen(0))
    assert torch.equal(out, x) and torch.equal(mask, torch.ones(3, 1, 16, 16))
    with pytest.raises(ConfigError, match="method.filter"):
        filters.apply_filter("jpeg", x, generator=gen(0))
    with pytest.raises(ConfigError, match="filter.portions"):
        filters.com_rcom(x, [], 0.5, gen(0))
    with pytest.raises(ConfigError, match="filter.portions"):
        filters.com_rcom(x, [0.01, 1.5], 0.5, gen(0))
    with pytest.raises(ConfigError, match="filter.p_com"):
        filters.com_rcom(x, [0.01], 1.2, gen(0))
    with pytest.raises(ConfigError, match="filter.mfm_radius"):
        filters.mfm(x, 0, gen(0))
    with pytest.raises(ConfigError, match="filter.random_rho"):
        filters.random_frequency(x, -0.1, gen(0))
    with pytest.raises(ConfigError, match="filter.patch_mask_size"):
        filters.random_patch(x, 0.5, 0, gen(0))
    with pytest.raises(DataError, match="B, C, H, W"):
        filters.com_rcom(x[0], [0.01], 0.5, gen(0))


def test_centred_log_spectrum_matches_numpy():
    x = photos(33, 31)
    expected = np.log1p(
        np.abs(np.fft.fftshift(np.fft.fft2(x.numpy().astype(np.float64)), axes=(-2, -1)))
    )
    result = filters.centred_log_spectrum(x)
    assert result.shape == (3, 33, 31)
    np.testing.assert_allclose(result.numpy(), expected.mean(axis=1), rtol=1e-5, atol=1e-5)
    # natural images concentrate energy at the centre (low frequencies)
    assert torch.equal(result[:, 16, 15], result.amax(dim=(-2, -1)))
