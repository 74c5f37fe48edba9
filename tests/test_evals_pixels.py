"""``folk eval pixels``: k-NN and the linear probe on raw eval-transformed pixels, checked
against numpy and scikit-learn on a real Fashion-MNIST subset, and end to end through the
CLI on random-initialisation runs of two different backbones."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from tests.conftest import REPO, tiny_overrides

LOG = logging.getLogger("test.evals.pixels")
GRAY = ["data.in_chans=1", "data.mean=[0.286]", "data.std=[0.353]"]
SUBSETS = ["data.train_subset=200", "data.test_subset=100"]
KS = [1, 5, 20]
T = 0.07

pytestmark = pytest.mark.usefixtures("one_thread")


def pixel_cfg(tiny_cfg, *extra):
    return tiny_cfg(
        *GRAY,
        *SUBSETS,
        "model.img_size=28",
        "model.patch_size=4",
        f"eval.knn.k={KS}",
        f"eval.knn.temperature={T}",
        *extra,
    )


def numpy_pixels(cfg, split):
    """Features without the task's transform or extraction code: the subset's PIL images
    (28 px: the eval transform neither resizes nor crops them), scaled to [0, 1],
    normalised with data.mean/std, flattened."""
    from folk.data import build_dataset

    ds = build_dataset(cfg, split)  # no transform: PIL images
    (mean,), (std,) = cfg["data"]["mean"], cfg["data"]["std"]
    images, labels = zip(*(ds[i] for i in range(len(ds))))
    x = np.stack([(np.asarray(im, dtype=np.float64) / 255.0 - mean) / std for im in images])
    return x.reshape(len(x), -1), np.asarray(labels)


def numpy_weighted_knn(train, train_y, test, k, temperature, num_classes):
    """Cosine similarity of L2-normalised rows, top-k neighbours, exp(sim / T) votes."""
    a = train / np.linalg.norm(train, axis=1, keepdims=True)
    b = test / np.linalg.norm(test, axis=1, keepdims=True)
    sims = b @ a.T
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    votes = np.zeros((len(test), num_classes))
    for i in range(len(test)):
        np.add.at(votes[i], train_y[top[i]], np.exp(sims[i, top[i]] / temperature))
    return votes


@pytest.fixture(scope="module")
def pixel_result(tmp_path_factory, fashion_root):
    """One pixels.run on the 200/100 subset, and the numpy features of the same subset."""
    from folk.config import load_config
    from folk.evals import pixels

    cfg = load_config(
        None,
        tiny_overrides(fashion_root)
        + GRAY
        + SUBSETS
        + [
            "model.img_size=28",
            "model.patch_size=4",
            f"eval.knn.k={KS}",
            f"eval.knn.temperature={T}",
            "eval.linear.lrs=[0.0001, 0.001, 0.01]",
            "eval.linear.epochs=30",
            "eval.linear.batch_size=32",
            "eval.linear.val_fraction=0.2",
        ],
    )
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("pixels")
        result = pixels.run(cfg, out, out, LOG)
    finally:
        torch.set_num_threads(before)
    return cfg, result, numpy_pixels(cfg, "train"), numpy_pixels(cfg, "test")


def test_pixel_features_are_the_normalised_flattened_images(tiny_cfg):
    from folk.evals.pixels import pixel_features

    cfg = pixel_cfg(tiny_cfg)
    x, y = pixel_features(cfg, "test", LOG)
    want_x, want_y = numpy_pixels(cfg, "test")
    assert x.shape == (100, 28 * 28)
    np.testing.assert_array_equal(y.numpy(), want_y)
    np.testing.assert_allclose(x.numpy(), want_x, rtol=0, atol=1e-5)
    # at 16 px the images are resized: still one flattened 16 x 16 image per row
    small, _ = pixel_features(pixel_cfg(tiny_cfg, "model.img_size=16"), "test", LOG)
    assert small.shape == (100, 256)


def test_knn_metrics_equal_a_numpy_weighted_knn(pixel_result):
    cfg, result, (train_x, train_y), (test_x, test_y) = pixel_result
    metrics = result["metrics"]
    assert result["primary"] == "knn_top1_k20"
    for k in KS:
        votes = numpy_weighted_knn(train_x, train_y, test_x, k, T, 10)
        top1 = 100.0 * np.mean(votes.argmax(1) == test_y)
        ranked = np.argsort(-votes, axis=1, kind="stable")[:, :5]
        voted = np.take_along_axis(votes, ranked, axis=1) > 0
        top5 = 100.0 * np.mean(((ranked == test_y[:, None]) & voted).any(1))
        assert metrics[f"knn_top1_k{k}"] == pytest.approx(top1), k
        assert metrics[f"knn_top5_k{k}"] == pytest.approx(top5), k
    # pixels of Fashion-MNIST: far above chance (10 %), far below perfect
    assert 55.0 < metrics["knn_top1_k20"] < 95.0


def test_linear_probe_is_close_to_scikit_learn_logistic_regression(pixel_result):
    from sklearn.linear_model import LogisticRegression

    cfg, result, (train_x, train_y), (test_x, test_y) = pixel_result
    metrics = result["metrics"]
    assert {"linear_top1", "linear_val_top1", "linear_best_lr", "linear_top5"} <= set(metrics)
    assert metrics["linear_best_lr"] in (0.0001, 0.001, 0.01)
    assert result["epochs"] == 30
    clf = LogisticRegression(C=1.0, max_iter=2000).fit(train_x, train_y)
    sk_top1 = 100.0 * clf.score(test_x, test_y)
    assert sk_top1 > 65.0  # the reference itself learns
    # the probe trains on 80 % of the 200 images (the rest chooses the lr): within a few
    # points of a converged logistic regression on all 200, and far above chance (10 %)
    assert metrics["linear_top1"] > 60.0
    assert abs(metrics["linear_top1"] - sk_top1) <= 10.0, (metrics["linear_top1"], sk_top1)


def _pretrain(fashion_root, run_dir, *extra):
    from folk.cli import main

    sets = (
        tiny_overrides(fashion_root)
        + GRAY
        + SUBSETS
        + [
            "model.img_size=16",
            "eval.linear.lrs=[0.001, 0.01]",
            "eval.linear.epochs=5",
            "eval.linear.batch_size=32",
            "pretrain.epochs=0",
            *extra,
        ]
    )
    args = ["pretrain", "--out", str(run_dir), "--config", str(REPO / "folk/config/defaults.yaml")]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 0
    assert (run_dir / "backbone.pt").is_file()


def test_folk_eval_pixels_end_to_end_ignores_the_backbone(tmp_path, fashion_root, capsys):
    from folk.cli import main

    vit, resnet = tmp_path / "vit", tmp_path / "resnet"
    _pretrain(fashion_root, vit)
    _pretrain(fashion_root, resnet, "model.arch=resnet50", "pretrain.variant=mfm")
    records = []
    for run_dir in (vit, resnet):
        assert main(["eval", "pixels", "--run", str(run_dir)]) == 0
        records.append(json.loads((run_dir / "eval/pixels/metrics.json").read_text()))
    a, b = records
    assert a["task"] == "pixels" and a["split"] == "test" and a["dataset"] == "fashion_mnist"
    # the default eval.knn.k has 20: the primary is the k-NN task's
    assert a["primary"] == "knn_top1_k20" and a["primary"] in a["metrics"]
    assert set(a["metrics"]) == (
        {f"knn_top{t}_k{k}" for t in (1, 5) for k in (10, 20, 100, 200)}
        | {"linear_top1", "linear_top5", "linear_val_top1", "linear_best_lr"}
    )
    assert a["metrics"]["knn_top1_k20"] > 40.0
    assert a["epochs"] == 5
    # a ViT and a ResNet-50 of other pre-training variants: the same numbers
    assert a["metrics"] == b["metrics"]
    capsys.readouterr()
    assert main(["eval", "pixels", "--run", str(vit)]) == 0
    assert "nothing to do" in capsys.readouterr().err


def test_pixels_refuses_features_larger_than_memory(tiny_cfg, monkeypatch):
    from folk.errors import ConfigError
    from folk.evals import pixels

    cfg = pixel_cfg(tiny_cfg)
    monkeypatch.setattr(pixels, "_physical_memory", lambda: 1000 * 28 * 28 * 4)
    pixels.check_memory(cfg, {"train": 600, "test": 400})  # exactly fits
    with pytest.raises(ConfigError, match="eval.train_subset"):
        pixels.check_memory(cfg, {"train": 601, "test": 400})
