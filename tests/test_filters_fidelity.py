"""``filter.clamp`` and ``filter.mfm_p_low``: the unclamped views equal numpy's inverse FFT of
the masked spectrum, the clamped ones its clip, and MFM's low-pass choice follows p_low, also
as configured through the training objective."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata

from folk import filters
from folk.errors import ConfigError

torch.set_num_threads(1)

FREQUENCY_FILTERS = {  # name -> the filter's own arguments
    "com_rcom": dict(portions=(0.005, 0.01, 0.05), p_com=0.5),
    "mfm": dict(radius=5.0, p_low=0.5),
    "random_frequency": dict(rho=0.4),
}


def photos(size: int) -> torch.Tensor:
    """camera (grey, replicated), astronaut, chelsea, coffee as a (4, 3, size, size) batch."""
    images = []
    for name in ("camera", "astronaut", "chelsea", "coffee"):
        array = getattr(skdata, name)().astype(np.float32) / 255.0
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=2)
        image = torch.from_numpy(array).permute(2, 0, 1)[None]
        images.append(F.interpolate(image, size=(size, size), mode="bilinear", antialias=True))
    return torch.cat(images).clamp(0, 1)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def numpy_inverse(x: torch.Tensor, centred_mask: torch.Tensor) -> np.ndarray:
    """np.real(ifft2(fft2(x) * M)) with M moved to numpy's (uncentred) layout."""
    m = np.fft.ifftshift(centred_mask.double().numpy(), axes=(-2, -1))
    spectrum = np.fft.fft2(x.double().numpy(), axes=(-2, -1))
    return np.real(np.fft.ifft2(spectrum * m, axes=(-2, -1)))


def run_filter(name: str, x: torch.Tensor, seed: int, clamp: bool):
    kwargs = FREQUENCY_FILTERS[name]
    if name == "com_rcom":
        return filters.com_rcom(x, kwargs["portions"], kwargs["p_com"], gen(seed), clamp=clamp)
    if name == "mfm":
        return filters.mfm(x, kwargs["radius"], gen(seed), p_low=kwargs["p_low"], clamp=clamp)
    return filters.random_frequency(x, kwargs["rho"], gen(seed), clamp=clamp)


# ------------------------------------------------------------------------------ clamp


@pytest.mark.parametrize("name", sorted(FREQUENCY_FILTERS))
@pytest.mark.parametrize("size", [32, 33])
def test_unclamped_filter_is_the_inverse_fft_and_clamped_is_its_clip(name, size):
    x = torch.cat([photos(size)] * 2)  # 8 images: both choices of the two-way filters
    raw, raw_mask = run_filter(name, x, 3, clamp=False)
    clipped, mask = run_filter(name, x, 3, clamp=True)
    assert torch.equal(mask, raw_mask)  # the flag changes nothing but the clamp
    expected = numpy_inverse(x, mask)
    np.testing.assert_allclose(raw.double().numpy(), expected, rtol=0, atol=2e-5)
    np.testing.assert_allclose(clipped.double().numpy(), np.clip(expected, 0, 1), rtol=0, atol=2e-5)
    assert raw.dtype == torch.float32
    # through the dispatcher as well
    out, m = filters.apply_filter(name, x, generator=gen(3), clamp=False, **FREQUENCY_FILTERS[name])
    assert torch.equal(m, mask) and torch.equal(out, raw)


def test_rcom_view_leaves_the_unit_range_without_clamp():
    x = photos(64)
    raw, mask = filters.com_rcom(x, [0.05], 0.0, gen(0), clamp=False)  # RCom for every image
    clipped, _ = filters.com_rcom(x, [0.05], 0.0, gen(0), clamp=True)
    assert (mask[:, :, 32, 32] == 0).all()  # RCom drops DC: the view has mean about 0
    for b in range(x.shape[0]):
        values = raw[b].numpy()
        assert values.min() < -0.02 and abs(values.mean()) < 1e-4
        assert (clipped[b] == 0).float().mean() > 0.2  # the clamp zeroes a good share
    assert clipped.min() >= 0 and clipped.max() <= 1


def test_random_patch_and_none_accept_clamp():
    x = photos(32)
    for clamp in (True, False):
        out, freq, pixel = filters.random_patch_with_pixel_mask(x, 0.5, 8, gen(1), clamp=clamp)
        np.testing.assert_array_equal(out.numpy(), x.numpy() * pixel.numpy())
        a, _ = filters.apply_filter(
            "random_patch", x, generator=gen(1), patch_ratio=0.5, patch_size=8, clamp=clamp
        )
        assert torch.equal(a, out)
        none, _ = filters.apply_filter("none", x, generator=gen(1), clamp=clamp)
        assert torch.equal(none, x)


# ------------------------------------------------------------------------------ p_low


def _within_three_sigma(successes: int, trials: int, p: float) -> bool:
    return abs(successes / trials - p) <= 3 * math.sqrt(p * (1 - p) / trials)


def test_mfm_low_pass_fraction_follows_p_low():
    n = 4000
    x = torch.rand((n, 1, 8, 8), generator=gen(0))
    _, mask, is_low = filters.mfm_with_choice(x, 2.5, gen(1), p_low=0.3)
    low = filters.mfm_low_pass_mask(8, 8, 2.5).float()
    assert _within_three_sigma(int(is_low.sum()), n, 0.3)
    # the mask, not just the flag: low-pass masks keep DC, high-pass ones drop it
    kept_dc = mask[:, 0, 4, 4] == 1
    assert torch.equal(kept_dc, is_low)
    assert torch.equal(mask[is_low][:, 0], low.expand(int(is_low.sum()), 8, 8))
    _, via_apply = filters.apply_filter("mfm", x, generator=gen(1), radius=2.5, p_low=0.3)
    assert _within_three_sigma(int((via_apply[:, 0, 4, 4] == 1).sum()), n, 0.3)
    _, default = filters.apply_filter("mfm", x, generator=gen(1), radius=2.5)
    assert _within_three_sigma(int((default[:, 0, 4, 4] == 1).sum()), n, 0.5)
    with pytest.raises(ConfigError, match="filter.mfm_p_low"):
        filters.mfm(x, 2.5, gen(1), p_low=None)


def _objective(*extra: str):
    from folk.config import load_config
    from folk.engine.step import FolkObjective
    from folk.models import build_student_teacher

    from test_teacher_fidelity import RESOLVED, TINY

    cfg = load_config(None, RESOLVED + TINY + ["pretrain.variant=folk_mfm_filters", *extra])
    torch.manual_seed(0)
    student, teacher = build_student_teacher(cfg)
    return cfg, FolkObjective(cfg, student, teacher, torch.device("cpu"))


def test_objective_filters_with_the_configured_p_low():
    n = 4000
    x = torch.rand((n, 1, 8, 8), generator=gen(2))
    for p_low in (0.3, 0.8):
        cfg, objective = _objective(f"filter.mfm_p_low={p_low}")
        assert objective.filter_name == "mfm"
        _, mask = filters.apply_filter(
            objective.filter_name, x, generator=gen(3), **objective.filter_kwargs
        )
        assert _within_three_sigma(int((mask[:, 0, 4, 4] == 1).sum()), n, p_low)


@pytest.mark.parametrize("clamp", [True, False])
def test_objective_feeds_the_student_the_configured_mfm_view(clamp):
    """p_low and clamp reach the student: its input is the hand-made MFM view, normalised."""
    cfg, objective = _objective("filter.mfm_p_low=0.3", f"filter.clamp={str(clamp).lower()}")
    views = [photos(32)[:3], photos(32)[1:]]
    seen = []
    hook = objective.student.backbone.patch_embed.register_forward_pre_hook(
        lambda mod, args: seen.append(args[0].detach().clone())
    )
    objective(views, 0.04, gen(4))
    hook.remove()
    # MFM draws one uniform per image: low-pass iff u < p_low
    is_low = (torch.rand(6, generator=torch.Generator().manual_seed(4)) < 0.3).numpy()
    low = filters.mfm_low_pass_mask(32, 32, 16 * 32 / 224).double().numpy()
    masks = np.stack([low if flag else 1 - low for flag in is_low])[:, None]
    raw = numpy_inverse(torch.cat(views), torch.from_numpy(masks))
    expected = np.clip(raw, 0, 1) if clamp else raw
    mean = np.asarray(cfg["data"]["mean"]).reshape(1, 3, 1, 1)
    std = np.asarray(cfg["data"]["std"]).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(seen[0].double().numpy(), (expected - mean) / std, rtol=0, atol=1e-4)
    assert raw.min() < -0.01  # the high-pass views have something to clamp
    student_pixels = seen[0].double().numpy() * std + mean
    assert (student_pixels.min() >= -1e-5) if clamp else (student_pixels.min() < -0.01)
