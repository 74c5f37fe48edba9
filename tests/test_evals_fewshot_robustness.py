"""Few-shot evaluation (label subsets, logistic regression with C chosen on the training set
only, ``folk eval fewshot``) and robustness (corruptions, frequency filters,
``folk eval robustness``), with a tiny ViT and real Fashion-MNIST on the CPU."""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FASHION_FILES, RGB_STATS, TINY_VIT, tiny_overrides

LOG = logging.getLogger("test.evals.fewshot")
FAST_FT = ["eval.finetune.epochs=1", "eval.finetune.batch_size=16", "eval.finetune.warmup_epochs=0"]


pytestmark = pytest.mark.usefixtures("one_thread")


def sets(items) -> list[str]:
    return [a for item in items for a in ("--set", item)]


@pytest.fixture(scope="module")
def run_dir(fashion_root, tmp_path_factory) -> Path:
    from folk.config import load_config, save_config
    from folk.models import build_backbone

    path = tmp_path_factory.mktemp("fs") / "run"
    path.mkdir()
    cfg = load_config(None, tiny_overrides(fashion_root) + RGB_STATS + TINY_VIT)
    save_config(cfg, path / "config.yaml")
    torch.manual_seed(0)
    torch.save(build_backbone(cfg).state_dict(), path / "backbone.pt")
    return path


@pytest.fixture
def own_root(fashion_root, tmp_path) -> Path:
    """A data root of its own (links to the IDX files), free to receive few-shot lists."""
    root = tmp_path / "fmnist"
    root.mkdir()
    for name in FASHION_FILES:
        os.symlink(fashion_root / name, root / name)
    return root


def fashion_images(n: int = 64, size: int = 32) -> torch.Tensor:
    """The first ``n`` real test images, upscaled to ``size`` px, RGB, in [0, 1]."""
    with gzip.open(Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")) as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:n]
    x = torch.from_numpy(raw.copy()).float().div(255)[:, None]
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x.clamp(0, 1).repeat(1, 3, 1, 1)


def natural_images(size: int = 224) -> torch.Tensor:
    """scikit-image's photographs (astronaut, cat, coffee, rocket) at ``size`` px."""
    from skimage import data
    from skimage.transform import resize

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    x = [
        torch.from_numpy(resize(p, (size, size), anti_aliasing=True)).permute(2, 0, 1)
        for p in photos
    ]
    return torch.stack(x).float().clamp(0, 1)


# ---------------------------------------------------------------- few-shot subsets


def test_fewshot_subsets_class_balanced_and_seed_stable(own_root):
    from folk.config import load_config
    from folk.data.classification import build_base_dataset
    from folk.evals.fewshot import fewshot_subset

    cfg = load_config(None, tiny_overrides(own_root))
    train = build_base_dataset(cfg, "train")
    labels = np.asarray(train.targets)
    for k in (1, 5):
        a = fewshot_subset(cfg, train, seed=0, shot=k)
        counts = {}
        for i in a:  # explicit count per class
            counts[int(labels[i])] = counts.get(int(labels[i]), 0) + 1
        assert counts == {c: k for c in range(10)}
        assert len(set(a.tolist())) == len(a)
        assert np.array_equal(a, fewshot_subset(cfg, train, seed=0, shot=k))  # stable
        assert not np.array_equal(a, fewshot_subset(cfg, train, seed=1, shot=k))
    frac = fewshot_subset(cfg, train, seed=2, fraction=0.001)
    per_class = np.bincount(labels[frac], minlength=10)
    want = [math.floor(0.001 * np.sum(labels == c) + 0.5) for c in range(10)]
    assert per_class.tolist() == want  # 6000 images per class -> 6 each

    # a list written by `folk prepare fewshot` takes precedence over the seeded draw
    from folk.data.subsets import fewshot_list_path, write_file_list

    chosen = np.sort(np.concatenate([np.flatnonzero(labels == c)[-2:] for c in range(10)]))
    write_file_list(fewshot_list_path(cfg, seed=0, shot=2), train, chosen)
    assert np.array_equal(fewshot_subset(cfg, train, seed=0, shot=2), chosen)
    assert not np.array_equal(fewshot_subset(cfg, train, seed=1, shot=2), chosen)


# ---------------------------------------------------------------- logistic regression


def separable(n_per_class: int, classes: int, dim: int, seed: int):
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:classes] * 5.0
    y = np.repeat(np.arange(classes), n_per_class)
    x = centres[y] + rng.normal(scale=0.3, size=(len(y), dim))
    return x, y


def test_logistic_regression_separable_reaches_100_percent():
    from folk.evals.fewshot import logreg_accuracy

    train_x, train_y = separable(5, 6, 16, seed=0)
    test_x, test_y = separable(50, 6, 16, seed=1)
    acc, c = logreg_accuracy(train_x, train_y, test_x, test_y, [0.1, 10.0], seed=0, fallback_c=10.0)
    assert acc >= 99.0
    assert c in (0.1, 10.0)
    # one shot: no cross-validation possible, the fallback C is used
    one_x, one_y = separable(1, 6, 16, seed=2)
    acc1, c1 = logreg_accuracy(one_x, one_y, test_x, test_y, [0.1, 10.0], seed=0, fallback_c=3.0)
    assert c1 == 3.0 and acc1 >= 95.0


def test_c_selection_never_sees_test_features(monkeypatch):
    """Every array given to the estimator before the final test score holds training rows
    only; the test features appear once, after the final fit."""
    from sklearn.linear_model import LogisticRegression

    from folk.evals.fewshot import l2_normalise, logreg_accuracy

    train_x, train_y = separable(4, 5, 12, seed=3)
    test_x, test_y = separable(20, 5, 12, seed=4)
    train_rows = {tuple(np.round(r, 12)) for r in l2_normalise(train_x)}
    test_rows = {tuple(np.round(r, 12)) for r in l2_normalise(test_x)}
    calls = []
    for method in ("fit", "predict", "predict_proba", "decision_function", "score"):
        original = getattr(LogisticRegression, method)

        def spy(self, X, *args, _original=original, _method=method, **kwargs):
            calls.append((_method, [tuple(np.round(r, 12)) for r in np.asarray(X)]))
            return _original(self, X, *args, **kwargs)

        monkeypatch.setattr(LogisticRegression, method, spy)
    logreg_accuracy(train_x, train_y, test_x, test_y, [0.01, 1.0, 100.0], seed=0, fallback_c=1.0)
    first_test = next(i for i, (_, rows) in enumerate(calls) if set(rows) & test_rows)
    fits = [i for i, (m, _) in enumerate(calls) if m == "fit"]
    assert len(fits) == 3 * 4 + 1  # 3 Cs x 4 folds (k = 4), then the refit
    assert first_test > fits[-1]
    for method, rows in calls[:first_test]:
        assert set(rows) <= train_rows, method
    assert set(calls[fits[-1]][1]) == train_rows  # refit on the whole k-shot set


def test_select_c_folds_hold_out_every_class():
    from folk.evals.fewshot import select_c

    x, y = separable(2, 4, 8, seed=5)
    c, scores = select_c(x, y, [10.0, 0.1], seed=0, fallback_c=1.0)
    assert sorted(scores) == [0.1, 10.0]
    assert c == max(sorted(scores), key=lambda k: (scores[k], -k))  # best, ties -> smaller C


# ---------------------------------------------------------------- folk eval fewshot


def test_folk_eval_fewshot_end_to_end(run_dir, capsys):
    from folk.cli import main

    args = ["eval", "fewshot", "--run", str(run_dir)] + sets(
        FAST_FT
        + [
            "eval.fewshot.shots=[1, 2]",
            "eval.fewshot.fractions=[0.001]",
            "eval.fewshot.seeds=[0, 1]",
            "eval.fewshot.logreg_c=[0.1, 10.0]",
        ]
    )
    assert main(args) == 0
    out_dir = run_dir / "eval" / "fewshot"
    record = json.loads((out_dir / "metrics.json").read_text())
    assert record["primary"] == "shot1_top1_mean"
    m = record["metrics"]
    assert set(m) == {
        f"{n}_top1_{s}" for n in ("shot1", "shot2", "frac0.1pct") for s in ("mean", "std")
    }
    assert all(0.0 <= v <= 100.0 for v in m.values())
    # the fraction statistics from the per-seed results, recomputed
    tops = [
        json.loads((out_dir / f"result-frac0.1pct-seed{s}.json").read_text())["result"]["metrics"][
            "top1"
        ]
        for s in (0, 1)
    ]
    assert m["frac0.1pct_top1_mean"] == pytest.approx((tops[0] + tops[1]) / 2)
    assert m["frac0.1pct_top1_std"] == pytest.approx(abs(tops[0] - tops[1]) / math.sqrt(2))
    for s in (0, 1):
        result = json.loads((out_dir / f"result-frac0.1pct-seed{s}.json").read_text())["result"]
        assert result["train_images"] == 60 and result["seed"] == s
        assert (out_dir / f"classifier-frac0.1pct-seed{s}.pt").is_file()
    capsys.readouterr()
    assert main(args) == 0
    assert "nothing to do" in capsys.readouterr().err


def test_fewshot_with_nothing_to_do_is_a_config_error(run_dir, capsys):
    from folk.cli import main

    rc = main(
        [
            "eval",
            "fewshot",
            "--run",
            str(run_dir),
            "--variant",
            "empty",
            "--set",
            "eval.fewshot.shots=[]",
            "--set",
            "eval.fewshot.fractions=[]",
        ]
    )
    assert rc == 2
    assert "eval.fewshot.fractions" in capsys.readouterr().err


# ---------------------------------------------------------------- corruptions


@pytest.mark.parametrize("table, size", [("imagenet_c", 224), ("cifar_c", 32)])
def test_corruptions_grow_with_severity_and_stay_in_range(table, size):
    """Each table at its own reference resolution: natural photographs at 224 px,
    Fashion-MNIST at 32 px."""
    from folk.evals.corruptions import CORRUPTIONS, corrupt, table_for_size

    assert table_for_size(size) == table
    x = natural_images(size) if size == 224 else fashion_images(64, size)
    for name in CORRUPTIONS:
        diffs = []
        for severity in range(1, 6):
            gen = torch.Generator().manual_seed(0)
            y = corrupt(x, name, severity, table=table, generator=gen)
            assert y.shape == x.shape and y.dtype == torch.float32
            assert y.min() >= 0.0 and y.max() <= 1.0
            diffs.append(float((y - x).abs().mean()))
        assert diffs[0] > 1e-3, (name, diffs)  # severity 1 already changes the image
        assert all(b > a for a, b in zip(diffs, diffs[1:])), (name, diffs)


def test_corruptions_against_independent_formulas():
    from scipy.ndimage import gaussian_filter

    from folk.evals.corruptions import SEVERITY_TABLES, corrupt

    x = fashion_images(4)
    # contrast: mean + c (x - mean), the mean over channels and pixels of each image
    c = SEVERITY_TABLES["imagenet_c"]["contrast"][2]
    xn = x.numpy().astype(np.float64)
    mean = xn.mean(axis=(1, 2, 3), keepdims=True)
    want = np.clip((xn - mean) * c + mean, 0, 1)
    np.testing.assert_allclose(corrupt(x, "contrast", 3).numpy(), want, atol=1e-6)
    # noise: the same draw scaled by the severity's std
    gen = torch.Generator().manual_seed(7)
    noise = torch.randn(x.shape, generator=gen)
    want = (x + SEVERITY_TABLES["cifar_c"]["gaussian_noise"][3] * noise).clamp(0, 1)
    got = corrupt(
        x, "gaussian_noise", 4, table="cifar_c", generator=torch.Generator().manual_seed(7)
    )
    torch.testing.assert_close(got, want)
    # blur: scipy's Gaussian filter with mirrored borders and the same +-ceil(3 sigma) support
    sigma = SEVERITY_TABLES["cifar_c"]["gaussian_blur"][4] * 32 / 32
    radius = math.ceil(3 * sigma)
    want = np.stack(
        [
            [gaussian_filter(ch, sigma, mode="mirror", truncate=radius / sigma) for ch in img]
            for img in xn
        ]
    )
    got = corrupt(x, "gaussian_blur", 5, table="cifar_c").numpy()
    np.testing.assert_allclose(got, np.clip(want, 0, 1), atol=1e-5)
    # JPEG: lossy, yet close to the input, and deterministic
    y = corrupt(x, "jpeg", 1)
    assert not torch.equal(y, x) and float((y - x).abs().mean()) < 0.1
    assert torch.equal(y, corrupt(x, "jpeg", 1))


def test_frequency_filters_against_numpy_fft():
    from folk.evals.corruptions import high_pass, low_pass, scaled_size

    x = fashion_images(3)
    radius = scaled_size(16, 32, 224)  # 2.29 px at 32 px
    h = w = 32
    mask = np.zeros((h, w))
    for i in range(h):  # centred circular mask, strict < as MFM
        for j in range(w):
            mask[i, j] = (i - h // 2) ** 2 + (j - w // 2) ** 2 < radius**2
    spectrum = np.fft.fft2(x.numpy().astype(np.float64))
    for fn, keep in ((low_pass, mask), (high_pass, 1 - mask)):
        want = np.clip(np.fft.ifft2(spectrum * np.fft.ifftshift(keep)).real, 0, 1)
        np.testing.assert_allclose(fn(x, radius).numpy(), want, atol=1e-5)
    # a constant image passes a low-pass unchanged; a wide one keeps any image
    flat = torch.full((1, 3, 32, 32), 0.3)
    torch.testing.assert_close(low_pass(flat, 1.0), flat)
    torch.testing.assert_close(low_pass(x, 100.0), x, atol=1e-5, rtol=0)


def test_bad_corruption_arguments():
    from folk.errors import ConfigError
    from folk.evals.corruptions import corrupt

    x = fashion_images(2)
    with pytest.raises(ConfigError, match="severities"):
        corrupt(x, "contrast", 6)
    with pytest.raises(ConfigError, match="corruptions"):
        corrupt(x, "fog", 1)
    with pytest.raises(ValueError, match="(?i)generator"):
        corrupt(x, "gaussian_noise", 1)


# ---------------------------------------------------------------- folk eval robustness


def test_folk_eval_robustness_end_to_end(run_dir, fashion_root, capsys):
    from folk.cli import main

    # radii that keep only the zero frequency at 32 px (the 224 px defaults): refused first
    rc = main(["eval", "robustness", "--run", str(run_dir)])
    assert rc == 2 and "eval.robustness.filter_radii" in capsys.readouterr().err
    # without a fine-tuned classifier: a clear error, nothing written
    rc = main(
        [
            "eval",
            "robustness",
            "--run",
            str(run_dir),
            "--set",
            "eval.robustness.filter_radii=[8, 32]",
        ]
    )
    assert rc == 2 and "folk eval finetune" in capsys.readouterr().err
    assert main(["eval", "finetune", "--run", str(run_dir)] + sets(FAST_FT)) == 0
    finetuned = json.loads((run_dir / "eval/finetune/metrics.json").read_text())["metrics"]

    assert (
        main(
            [
                "eval",
                "robustness",
                "--run",
                str(run_dir),
                "--set",
                "eval.robustness.severities=[1, 3, 5]",
                "--set",
                "eval.robustness.filter_radii=[8, 32]",
            ]
        )
        == 0
    )
    record = json.loads((run_dir / "eval/robustness/metrics.json").read_text())
    m = record["metrics"]
    corruptions = ["gaussian_noise", "gaussian_blur", "jpeg", "contrast"]
    want = {"clean_top1", "mean_corruption_top1"}
    want |= {f"{c}_s{s}_top1" for c in corruptions for s in (1, 3, 5)}
    want |= {f"{c}_mean_top1" for c in corruptions}
    want |= {f"{kind}_r{r}_top1" for kind in ("lowpass", "highpass") for r in (8, 32)}
    assert set(m) == want
    assert record["primary"] == "mean_corruption_top1"
    # the clean accuracy is the fine-tuned classifier's own test accuracy
    assert m["clean_top1"] == pytest.approx(finetuned["top1"])
    for c in corruptions:
        assert m[f"{c}_mean_top1"] == pytest.approx(
            np.mean([m[f"{c}_s{s}_top1"] for s in (1, 3, 5)])
        )
    assert m["mean_corruption_top1"] == pytest.approx(
        np.mean([m[f"{c}_mean_top1"] for c in corruptions])
    )
    n_test = 40
    for v in m.values():  # accuracies of 40 images
        assert 0.0 <= v <= 100.0
    assert all(
        abs(m[k] * n_test / 100 - round(m[k] * n_test / 100)) < 1e-9
        for k in m
        if k.endswith("_top1") and "mean" not in k
    )
