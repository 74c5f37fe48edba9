"""The photometric augmentation: each operation against torchvision's own, the parameter
rows against torchvision's ColorJitter and DINO's probabilities, and the device path
against the per-sample path (the same views, the same training run)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from scipy import stats
from torchvision.transforms import v2

from folk.config import load_config
from folk.data import photometric as P
from folk.data.classification import collate_skip_none
from folk.data.transforms import PretrainViews, finish_views
from folk.errors import ConfigError

RGB = ["data.in_chans=3", "data.mean=[0.485, 0.456, 0.406]", "data.std=[0.229, 0.224, 0.225]"]


def images(n: int = 4, size: int = 40, seed: int = 0) -> torch.Tensor:
    x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))
    x[0, :, :6] = 0.5  # grey pixels: no hue
    x[1, :2, :6] = 1.0  # two channels tied for the maximum
    x[2, :, :6] = torch.tensor([0.0, 0.0, 1.0]).view(3, 1, 1)
    return x


def row(**values) -> torch.Tensor:
    r = torch.zeros(P.N_PARAMS)
    r[P.BRIGHTNESS] = r[P.CONTRAST] = r[P.SATURATION] = 1.0
    r[P.SIGMA] = 1.0
    r[P.ORDER] = torch.arange(4.0)
    for name, value in values.items():
        if name == "order":
            r[P.ORDER] = torch.tensor(value, dtype=torch.float32)
        else:
            r[getattr(P, name.upper())] = value
    return r


# ------------------------------------------------------------------ each operation


@pytest.mark.parametrize("factor", [0.0, 0.6, 1.0, 1.4])
def test_jitter_factors_match_torchvision(factor):
    x = images()
    f = torch.full((len(x),), factor)
    for ours, theirs in [
        (P.adjust_brightness, TF.adjust_brightness),
        (P.adjust_contrast, TF.adjust_contrast),
        (P.adjust_saturation, TF.adjust_saturation),
    ]:
        want = torch.stack([theirs(img, factor) for img in x])
        torch.testing.assert_close(ours(x, f), want, atol=3e-7, rtol=0)


@pytest.mark.parametrize("shift", [-0.5, -0.1, 0.0, 0.03, 0.25, 0.5])
def test_hue_matches_torchvision(shift):
    x = images()
    want = torch.stack([TF.adjust_hue(img, shift) for img in x])
    torch.testing.assert_close(
        P.adjust_hue(x, torch.full((len(x),), shift)), want, atol=5e-6, rtol=0
    )


def test_grayscale_and_one_channel_contrast_match_torchvision():
    x = images()
    torch.testing.assert_close(P.grayscale(x), TF.rgb_to_grayscale(x), atol=3e-7, rtol=0)
    one = x[:, :1]
    want = torch.stack([TF.adjust_contrast(img, 0.7) for img in one])
    torch.testing.assert_close(
        P.adjust_contrast(one, torch.full((4,), 0.7)), want, atol=3e-7, rtol=0
    )


@pytest.mark.parametrize("size", [3, 7, 23])
def test_blur_matches_torchvision_per_image_sigma(size):
    x = images(size=48)
    sigma = torch.tensor([0.1, 0.5, 1.3, 2.0])
    want = torch.stack(
        [TF.gaussian_blur(img, [size, size], [float(s), float(s)]) for img, s in zip(x, sigma)]
    )
    torch.testing.assert_close(P.gaussian_blur(x, sigma, size), want, atol=2e-6, rtol=0)


def test_blur_of_an_image_does_not_depend_on_its_batch():
    x = images(size=48)
    sigma = torch.tensor([0.1, 0.5, 1.3, 2.0])
    together = P.gaussian_blur(x, sigma, 23)
    for i in range(len(x)):
        assert torch.equal(P.gaussian_blur(x[i : i + 1], sigma[i : i + 1], 23)[0], together[i])


def test_solarize_at_dinos_threshold():
    u8 = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(1, 3, 16, 16)
    want = TF.solarize(u8, 128).float() / 255  # DINO solarises 8-bit images at 128
    torch.testing.assert_close(P.solarize(u8.float() / 255), want, atol=1e-7, rtol=0)


def test_kernel_size_is_a_tenth_of_the_view():
    assert [P.blur_kernel_size(s) for s in (224, 96, 32, 16)] == [23, 9, 3, 3]


# ------------------------------------------------------------------ composition


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0), (1, 3, 0, 2)])
def test_one_row_composes_torchvisions_operations_in_its_order(order):
    x = images()[1]
    r = row(
        jitter=1,
        brightness=1.3,
        contrast=0.7,
        saturation=1.2,
        hue=0.08,
        order=order,
        gray=1,
        blur=1,
        sigma=0.9,
        solarize=1,
    )
    ops = {
        0: lambda t: TF.adjust_brightness(t, 1.3),
        1: lambda t: TF.adjust_contrast(t, 0.7),
        2: lambda t: TF.adjust_saturation(t, 1.2),
        3: lambda t: TF.adjust_hue(t, 0.08),
    }
    want = x
    for op in order:
        want = ops[op](want)
    want = TF.rgb_to_grayscale(want, num_output_channels=3)
    want = TF.gaussian_blur(want, [7, 7], [0.9, 0.9])
    want = torch.where(want >= 128 / 255, 1 - want, want)
    got = P.apply_photometric(x[None], r[None], 7)[0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_rows_that_ask_for_nothing_leave_the_image_exactly():
    x = images()
    rows = torch.stack([row(brightness=1.4, hue=0.1, sigma=2.0) for _ in x])  # jitter off
    assert torch.equal(P.apply_photometric(x, rows, 7), x)


def random_rows(n: int, spec: P.ViewSpec, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([P.draw_params(spec, gen) for _ in range(n)])


def dino_spec(**changes) -> P.ViewSpec:
    augment = dict(
        color_jitter_prob=0.8,
        brightness=0.4,
        contrast=0.4,
        saturation=0.2,
        hue=0.1,
        grayscale_prob=0.2,
    )
    augment.update(changes)
    return P.ViewSpec(augment, 3, blur_p=0.5, solarize_p=0.5)


def test_a_batch_gives_each_image_what_it_gives_alone():
    x = images(n=12, size=32, seed=3)
    rows = random_rows(12, dino_spec(), seed=4)
    together = P.apply_photometric(x, rows, 5)
    for i in range(len(x)):
        assert torch.equal(P.apply_photometric(x[i : i + 1], rows[i : i + 1], 5)[0], together[i])


def test_the_accelerators_branch_gives_the_hosts_result(monkeypatch):
    """The accelerator branch (every operation on the whole batch, selected on the device)
    run on the CPU by pretending the tensors live elsewhere for the branch choice only."""
    x = images(n=12, size=32, seed=5)
    rows = random_rows(12, dino_spec(), seed=6)
    host = P.apply_photometric(x, rows, 5)
    monkeypatch.setattr(P, "_on_host", lambda t: False)
    device = P.apply_photometric(x, rows, 5)
    torch.testing.assert_close(device, host, atol=2e-6, rtol=0)


# ------------------------------------------------------------------ compiled on the CPU


def needs_cpp_compiler():
    if P.cpp_compiler() is None:
        pytest.skip("augment.compile needs a C++ compiler for torch.compile; none found")


def test_compiled_operations_give_the_eager_results():
    """Compiled, each operation is the same formula in one fused loop: equal to the eager
    result up to float32 rounding (the blur with every tap, zeros included, for any sigma)."""
    needs_cpp_compiler()
    compiled = P._compiled_ops()
    for i in range(3):
        x = images(n=4, size=40, seed=i)[i : i + 1]
        for name, value in (
            ("brightness", 1.3),
            ("contrast", 0.6),
            ("saturation", 1.2),
            ("hue", -0.07),
            ("hue", 0.3),
        ):
            factor = torch.tensor([value])
            torch.testing.assert_close(
                compiled[name](x, factor), P.EAGER_OPS[name](x, factor), atol=2e-6, rtol=0
            )
        assert torch.equal(compiled["solarize"](x), P.solarize(x))
        torch.testing.assert_close(
            compiled["grayscale"](x), P.EAGER_OPS["grayscale"](x), atol=1e-6, rtol=0
        )
        for sigma in (0.3, 1.3, 2.0):
            s = torch.tensor([sigma])
            torch.testing.assert_close(
                compiled["blur"](x, s, 23), P.gaussian_blur(x, s, 23), atol=2e-6, rtol=0
            )


def test_compiled_views_are_the_same_alone_as_in_a_batch():
    needs_cpp_compiler()
    x = images(n=6, size=32, seed=7)
    rows = random_rows(6, dino_spec(), seed=8)
    together = P.apply_photometric(x, rows, 23, compiled=True)
    torch.testing.assert_close(together, P.apply_photometric(x, rows, 23), atol=1e-5, rtol=0)
    for i in range(len(x)):
        alone = P.apply_photometric(x[i : i + 1], rows[i : i + 1], 23, compiled=True)[0]
        assert torch.equal(alone, together[i])


def test_compile_on_without_a_compiler_is_refused_before_any_work(monkeypatch):
    monkeypatch.setattr(P, "cpp_compiler", lambda: None)
    with pytest.raises(ConfigError, match="augment.compile: on needs a C\\+\\+ compiler"):
        PretrainViews(load_config(None, ["augment.compile=on"]))
    assert PretrainViews(load_config(None, ["augment.compile=auto"])).compiled is False
    assert P.compile_wanted("off") is False


# ------------------------------------------------------------------ the parameters


def test_parameter_rows_follow_colorjitter_and_the_view_probabilities():
    n = 6000
    spec = P.ViewSpec(
        dict(
            color_jitter_prob=0.8,
            brightness=0.4,
            contrast=0.3,
            saturation=0.2,
            hue=0.1,
            grayscale_prob=0.2,
        ),
        3,
        blur_p=0.1,
        solarize_p=0.2,
    )
    rows = random_rows(n, spec, seed=0).numpy()
    for column, (low, high) in [
        (P.BRIGHTNESS, (0.6, 1.4)),
        (P.CONTRAST, (0.7, 1.3)),
        (P.SATURATION, (0.8, 1.2)),
        (P.HUE, (-0.1, 0.1)),
        (P.SIGMA, (0.1, 2.0)),
    ]:
        values = rows[:, column]
        assert low <= values.min() and values.max() <= high
        assert stats.kstest(values, "uniform", args=(low, high - low)).pvalue > 1e-3
    for column, p in [(P.JITTER, 0.8), (P.GRAY, 0.2), (P.BLUR, 0.1), (P.SOLARIZE, 0.2)]:
        hits = int(rows[:, column].sum())
        assert stats.binomtest(hits, n, p).pvalue > 1e-3, (column, hits / n)
    orders = [tuple(int(v) for v in r) for r in rows[:, P.ORDER]]
    counts = [orders.count(perm) for perm in itertools.permutations(range(4))]
    assert sum(counts) == n
    assert stats.chisquare(counts).pvalue > 1e-3


def test_factors_have_torchvisions_distribution():
    """Two-sample test against the factors torchvision's ColorJitter draws itself."""
    gen_rows = random_rows(3000, dino_spec(), seed=2).numpy()
    torch.manual_seed(3)
    jitter = v2.ColorJitter(0.4, 0.4, 0.2, 0.1)
    keys = ("brightness_factor", "contrast_factor", "saturation_factor", "hue_factor")
    drawn = [jitter.make_params([torch.zeros(3, 2, 2)]) for _ in range(3000)]
    theirs = np.array([[float(d[k]) for k in keys] for d in drawn])
    for i, column in enumerate((P.BRIGHTNESS, P.CONTRAST, P.SATURATION, P.HUE)):
        assert stats.ks_2samp(gen_rows[:, column], theirs[:, i]).pvalue > 1e-3


def test_one_channel_views_skip_colour_only_operations():
    spec = P.ViewSpec(
        dict(
            color_jitter_prob=1.0,
            brightness=0.4,
            contrast=0.4,
            saturation=0.2,
            hue=0.1,
            grayscale_prob=0.5,
        ),
        1,
        0.0,
        0.0,
    )
    rows = random_rows(200, spec, seed=0)
    assert torch.all(rows[:, P.SATURATION] == 1) and torch.all(rows[:, P.HUE] == 0)
    assert torch.all(rows[:, P.GRAY] == 0)
    x = images(n=200, size=8)[:, :1]
    out = P.apply_photometric(x, rows, 3)
    assert out.shape == x.shape


# ------------------------------------------------------------------ the two paths


@pytest.mark.parametrize("chans, compile", [(1, "off"), (3, "off"), (3, "on")])
def test_device_path_gives_the_per_sample_views(chans, compile):
    if compile == "on":
        needs_cpp_compiler()
    extra = RGB if chans == 3 else ["data.in_chans=1", "data.mean=[0.5]", "data.std=[0.25]"]
    common = [
        "model.img_size=32",
        "augment.preset=dino",
        "augment.local_crops_number=2",
        "augment.local_crops_size=16",
        f"augment.compile={compile}",
        *extra,
    ]
    workers = PretrainViews(load_config(None, common))
    device = PretrainViews(load_config(None, common + ["augment.photometric=device"]))
    rng = np.random.default_rng(0)
    pics = [
        Image.fromarray(rng.integers(0, 256, (40, 36, 3), np.uint8)).convert(
            "RGB" if chans == 3 else "L"
        )
        for _ in range(8)
    ]
    made = []
    for i, pic in enumerate(pics):
        torch.manual_seed(i)
        made.append((workers(pic), 0))
    per_sample, _, _ = collate_skip_none(made)
    raw = []
    for i, pic in enumerate(pics):
        torch.manual_seed(i)
        item = device(pic)
        assert all(v.dtype == torch.uint8 for v in item[:-1])
        assert item[-1].shape == (4, P.N_PARAMS)
        raw.append((item, 0))
    batch, _, _ = collate_skip_none(raw)
    finished = finish_views(batch, device)
    assert len(finished) == len(per_sample) == 4
    for a, b in zip(finished, per_sample):
        assert a.dtype == torch.float32 and torch.equal(a, b)
    assert finish_views(per_sample, workers) is per_sample


def test_training_with_device_photometric_equals_the_per_sample_run(tiny_cfg, tmp_path):
    """Same seed, same views: a run whose workers only crop gives bitwise the weights and
    records of a run whose workers do everything (the CPU; RGB so that every operation
    takes part)."""
    from folk.engine.pretrain import pretrain

    rgb = RGB + ["augment.preset=dino", "pretrain.max_iterations=3"]
    pretrain(tiny_cfg(*rgb), tmp_path / "workers")
    pretrain(tiny_cfg(*rgb, "augment.photometric=device"), tmp_path / "device")
    a = torch.load(tmp_path / "workers/backbone.pt", weights_only=True)
    b = torch.load(tmp_path / "device/backbone.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda p: [
        {k: v for k, v in json.loads(l).items() if k not in ("time", "images_per_s")}
        for l in (p / "metrics.jsonl").read_text().splitlines()
    ]
    assert strip(tmp_path / "workers") == strip(tmp_path / "device")


# ------------------------------------------------------------------ data.on_device

ON_DEVICE = ["augment.photometric=device", "data.on_device=true"]


def _loader_and_device_views(cfg, keys):
    from folk.data import build_dataset
    from folk.data.on_device import DeviceBatches
    from folk.engine.data import SeededViews

    dataset = build_dataset(cfg, "train")
    views = PretrainViews(cfg)
    seeded = SeededViews(dataset, views, cfg["experiment"]["seed"])
    loader, _, _ = collate_skip_none([seeded[k] for k in keys])
    on_device = DeviceBatches(
        dataset, views, keys, len(keys), cfg["experiment"]["seed"], torch.device("cpu")
    )
    ((batch, labels, skipped),) = list(on_device)
    assert skipped == 0 and len(labels) == len(keys)
    return finish_views(loader, views), finish_views(batch, views)


def test_on_device_views_equal_the_loaders_when_no_resampling_is_needed(tiny_cfg):
    """28 px images, 28 px views of the whole image: the crop is exact, and flips and
    photometric rows come from the same draws."""
    cfg = tiny_cfg(
        *ON_DEVICE,
        "model.img_size=28",
        "model.patch_size=4",
        "augment.crop_scale=[1.0, 1.0]",
        "augment.preset=dino",
    )
    keys = [(e, i) for e in (0, 3) for i in range(10)]
    loader, device = _loader_and_device_views(cfg, keys)
    for a, b in zip(loader, device):
        assert torch.equal(a, b)


def test_on_device_crops_are_the_loaders_boxes(tiny_cfg):
    """Upsampling crops: the same boxes, resampled without antialiasing, stay close to the
    loader's views, far closer than the views of another epoch."""
    cfg = tiny_cfg(
        *ON_DEVICE,
        "model.img_size=56",
        "model.patch_size=8",
        "augment.crop_scale=[0.2, 1.0]",
        "augment.color_jitter_prob=0.0",
        "augment.blur_prob=[0.0, 0.0]",
        "augment.solarize_prob=[0.0, 0.0]",
    )
    keys = [(0, i) for i in range(16)]
    loader, device = _loader_and_device_views(cfg, keys)
    other, _ = _loader_and_device_views(cfg, [(1, i) for i in range(16)])
    for a, b, c in zip(loader, device, other):
        same = (a - b).abs().mean().item()
        assert same < 0.01 < (a - c).abs().mean().item() / 3, same


def test_on_device_needs_device_photometric(tiny_cfg):
    from folk.errors import ConfigError

    with pytest.raises(ConfigError, match="data.on_device.*augment.photometric"):
        tiny_cfg("data.on_device=true")


def assert_resume_equals_uninterrupted(cfg: dict, tmp_path) -> None:
    """A run killed after iteration 5 and resumed ends bitwise where an uninterrupted one
    does."""
    from folk.engine.hooks import stop_after
    from folk.engine.pretrain import StopRequested, pretrain

    pretrain(cfg, tmp_path / "straight")
    with pytest.raises(StopRequested):
        pretrain(cfg, tmp_path / "killed", hooks=[stop_after(5)])
    pretrain(cfg, tmp_path / "killed")
    a = torch.load(tmp_path / "straight/backbone.pt", weights_only=True)
    b = torch.load(tmp_path / "killed/backbone.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_on_device_resume_equals_uninterrupted(tiny_cfg, tmp_path):
    assert_resume_equals_uninterrupted(tiny_cfg(*ON_DEVICE), tmp_path)


def test_device_photometric_resume_equals_uninterrupted(tiny_cfg, tmp_path):
    """The loader sends crops and rows, the device finishes the views (RGB, DINO's preset,
    so every operation takes part)."""
    cfg = tiny_cfg(*RGB, "augment.preset=dino", "augment.photometric=device")
    assert_resume_equals_uninterrupted(cfg, tmp_path)
