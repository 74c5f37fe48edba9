"""Frozen-feature evaluations: feature extraction and its cache, weighted k-NN, linear probe,
and ``folk eval knn|linear`` end to end on a tiny run directory with real Fashion-MNIST."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(
    not (FMNIST / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST IDX files not installed (apt-get install dataset-fashion-mnist)",
)
LOG = logging.getLogger("test.evals")


def as_set(key, value) -> str:
    """``--set`` text for a value; YAML, since PyYAML reads ``1e-06`` as a string."""
    text = yaml.safe_dump(value, default_flow_style=True)
    return f"{key}={text.replace(chr(10) + '...' + chr(10), '').strip()}"


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- k-NN


def reference_knn(train, train_labels, test, k, temperature, num_classes):
    """Explicit loop: cosine similarity to every training sample, sort, weighted vote."""
    train = np.asarray(train, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    preds = []
    for q in test:
        sims = [float(np.dot(q, t) / (np.linalg.norm(q) * np.linalg.norm(t))) for t in train]
        order = sorted(range(len(train)), key=lambda j: -sims[j])[:k]
        votes = [0.0] * num_classes
        for j in order:
            votes[int(train_labels[j])] += math.exp(sims[j] / temperature)
        preds.append(max(range(num_classes), key=lambda c: (votes[c], -c)))
    return np.asarray(preds)


def test_knn_matches_explicit_loop():
    from folk.evals.knn import knn_accuracy, knn_metrics, knn_predict

    gen = torch.Generator().manual_seed(0)
    num_classes = 7
    train = torch.randn(60, 8, generator=gen)
    train_labels = torch.randint(0, num_classes, (60,), generator=gen)
    test = torch.randn(23, 8, generator=gen)
    test_labels = torch.randint(0, num_classes, (23,), generator=gen)
    ks = [1, 5, 20]
    temperature = 0.07
    metrics = knn_metrics(
        train, train_labels, test, test_labels, ks, temperature, num_classes, chunk_size=6
    )
    for k in ks:
        want = reference_knn(
            train.numpy(), train_labels.numpy(), test.numpy(), k, temperature, num_classes
        )
        got = knn_predict(train, train_labels, test, k, temperature, num_classes, chunk_size=6)
        np.testing.assert_array_equal(got.numpy(), want)
        assert metrics[f"top1_k{k}"] == pytest.approx(100.0 * np.mean(want == test_labels.numpy()))
        assert f"top5_k{k}" in metrics
        assert (
            knn_accuracy(
                train, train_labels, test, test_labels, k=k, T=temperature, num_classes=num_classes
            )
            == metrics[f"top1_k{k}"]
        )
    # top-5 against explicit rankings of the votes: only classes that got a vote count
    train_n = train / train.norm(dim=1, keepdim=True)
    for k in (1, 5, 20):
        hits = 0
        for q, y in zip(test / test.norm(dim=1, keepdim=True), test_labels):
            sims = (train_n @ q).tolist()
            order = sorted(range(len(sims)), key=lambda j: -sims[j])[:k]
            votes = [0.0] * num_classes
            for j in order:
                votes[int(train_labels[j])] += math.exp(sims[j] / temperature)
            top5 = [
                c for c in sorted(range(num_classes), key=lambda c: -votes[c])[:5] if votes[c] > 0
            ]
            hits += int(y) in top5
        assert metrics[f"top5_k{k}"] == pytest.approx(100.0 * hits / len(test))
    assert metrics["top5_k1"] == metrics["top1_k1"]  # one neighbour votes for one class


def test_knn_hand_made_weights_decide():
    """Test point (1, 0): one neighbour of class 0 at similarity 1, two of class 1 at 0.6.
    k=3: with T=0.1, e^10 > 2 e^6 so class 0 wins; with T=10, e^0.1 < 2 e^0.06 so class 1
    wins. Lengths differ to check that features are normalised."""
    from folk.evals.knn import knn_metrics, knn_predict

    train = torch.tensor([[2.0, 0.0], [3.0, 4.0], [0.6, -0.8], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 2])
    test = torch.tensor([[5.0, 0.0]])
    assert knn_predict(train, labels, test, 3, 0.1, 3).tolist() == [0]
    assert knn_predict(train, labels, test, 3, 10.0, 3).tolist() == [1]
    assert knn_predict(train, labels, test, 1, 10.0, 3).tolist() == [0]
    # k larger than the training set uses every sample: class 1 still wins at T=10
    assert knn_predict(train, labels, test, 50, 10.0, 3).tolist() == [1]
    metrics = knn_metrics(train, labels, test, torch.tensor([1]), [1, 3], 10.0, 3)
    assert metrics == {"top1_k1": 0.0, "top1_k3": 100.0}  # no top-5 with 3 classes


def test_primary_k():
    from folk.evals.knn import primary_k

    assert primary_k([10, 20, 100, 200]) == 20
    assert primary_k([10, 50]) == 10
    assert primary_k([15, 25]) == 15
    assert primary_k([200]) == 200


# ---------------------------------------------------------------- linear probe


def separable_problem(n_per_class=60, dim=16, num_classes=3, seed=0, margin=4.0, noise_seed=None):
    """Gaussian clusters around ``seed``'s class centres; ``noise_seed`` draws fresh
    samples of the same problem (a test set)."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=gen)
    centres = margin * centres / centres.norm(dim=1, keepdim=True)
    if noise_seed is not None:
        gen = torch.Generator().manual_seed(10_000 + noise_seed)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    feats = centres[labels] + 0.5 * torch.randn(len(labels), dim, generator=gen)
    perm = torch.randperm(len(labels), generator=gen)
    return feats[perm], labels[perm]


def test_train_grid_learns_separable_problem():
    from folk.evals.linear import grid_topk, select_lr, train_grid

    x, y = separable_problem(seed=1)
    xt, yt = separable_problem(seed=1, n_per_class=30, noise_seed=1)
    lrs = [1e-6, 0.1, 1.0]
    grid = train_grid(x[:150], y[:150], 3, lrs, epochs=10, batch_size=32, seed=0, log=LOG)
    best, val = select_lr(grid, x[150:], y[150:], lrs)
    assert lrs[best] in (0.1, 1.0)
    assert float(val[best]) > 95.0
    assert float(grid_topk(grid, xt, yt)[best]) > 95.0
    assert float(val[0]) < 80.0  # the tiny lr has not learnt: selection matters here


def test_grid_heads_train_independently():
    """Head i of a grid ends where a single classifier with lr_i and the same start ends:
    one SGD run written out by hand (momentum 0.9, cosine per iteration)."""
    from folk.evals.linear import init_grid, train_grid

    x, y = separable_problem(n_per_class=10, dim=5, seed=3)
    lrs, epochs, batch = [0.05, 0.5], 2, 8
    grid = train_grid(x, y, 3, lrs, epochs=epochs, batch_size=batch, seed=7, log=LOG)
    start = init_grid(5, 3, len(lrs), seed=7)
    n = len(y)
    steps = math.ceil(n / batch)
    for i, lr in enumerate(lrs):
        w = start[i].weight.detach().clone().double()
        b = start[i].bias.detach().clone().double()
        mw, mb = torch.zeros_like(w), torch.zeros_like(b)
        it = 0
        for epoch in range(epochs):
            order = torch.randperm(n, generator=torch.Generator().manual_seed(7 * 100_003 + epoch))
            for s in range(steps):
                idx = order[s * batch : (s + 1) * batch]
                xb, yb = x[idx].double(), y[idx]
                p = torch.softmax(xb @ w.T + b, dim=1)
                p[torch.arange(len(yb)), yb] -= 1.0
                gw, gb = p.T @ xb / len(yb), p.mean(dim=0)
                mw = 0.9 * mw + gw if it else gw
                mb = 0.9 * mb + gb if it else gb
                step_lr = lr * 0.5 * (1 + math.cos(math.pi * it / (steps * epochs)))
                w, b = w - step_lr * mw, b - step_lr * mb
                it += 1
        assert torch.allclose(grid[i].weight.double(), w, atol=1e-5)
        assert torch.allclose(grid[i].bias.double(), b, atol=1e-5)


def test_train_grid_resume_equals_uninterrupted(tmp_path):
    from folk.engine.hooks import at_epoch_end
    from folk.evals.linear import train_grid

    x, y = separable_problem(n_per_class=20, dim=6, seed=2)
    args = dict(num_classes=3, lrs=[0.01, 0.3], epochs=5, batch_size=16, seed=4, log=LOG)
    whole = train_grid(x, y, **args)

    ckpt = tmp_path / "grid.pt"

    class Interrupt(Exception):
        pass

    def stop_after_two(epoch):
        if epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_grid(x, y, checkpoint=ckpt, hooks=[at_epoch_end(stop_after_two)], **args)
    state = torch.load(ckpt, weights_only=True)
    assert int(state["epoch"]) == 2
    seen = []
    resumed = train_grid(x, y, checkpoint=ckpt, hooks=[at_epoch_end(seen.append)], **args)
    assert seen == [2, 3, 4]  # only the remaining epochs ran
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)

    # a checkpoint of another setting is not resumed from
    seen.clear()
    other = dict(args, lrs=[0.02, 0.3])
    train_grid(x, y, checkpoint=ckpt, hooks=[at_epoch_end(seen.append)], **other)
    assert seen == [0, 1, 2, 3, 4]


def _fake_features(monkeypatch, train, test):
    """linear.run/knn.run on given tensors: no backbone, no data."""
    import folk.evals.features as features

    monkeypatch.setattr(features, "load_eval_backbone", lambda run_dir, cfg: None)
    data = {"train": train, "test": test}
    calls = []

    def fake_extract(backbone, cfg, split, cache_dir, **kw):
        calls.append((split, kw.get("n_last_blocks"), kw.get("avgpool_patchtokens")))
        return data[split]

    monkeypatch.setattr(features, "extract_features", fake_extract)
    return calls


def _probe_cfg(**linear):
    from folk.config import load_config

    sets = [as_set(f"eval.linear.{k}", v) for k, v in linear.items()]
    return load_config(
        None,
        [
            "data.num_classes=3",
            "eval.linear.n_last_blocks=2",
            "eval.linear.avgpool_patchtokens=true",
        ]
        + sets,
    )


def test_lr_selection_never_sees_test_labels(tmp_path, monkeypatch):
    """Poisoning the test labels changes the test accuracy but neither the chosen lr nor
    its validation accuracy; and selecting on the poisoned test labels would have chosen
    another lr, so the check has teeth."""
    from folk.evals import linear

    x, y = separable_problem(n_per_class=50, seed=5)
    xt, yt = separable_problem(n_per_class=20, seed=5, noise_seed=5)
    cfg = _probe_cfg(lrs=[1e-6, 0.5], epochs=8, batch_size=32, val_fraction=0.2)
    calls = _fake_features(monkeypatch, (x, y), (xt, yt))
    clean = linear.run(cfg, tmp_path, tmp_path / "clean", LOG)
    assert ("train", 2, True) in calls and ("test", 2, True) in calls
    poisoned_labels = (yt + 1) % 3
    _fake_features(monkeypatch, (x, y), (xt, poisoned_labels))
    poisoned = linear.run(cfg, tmp_path, tmp_path / "poisoned", LOG)

    assert clean["metrics"]["best_lr"] == poisoned["metrics"]["best_lr"] == 0.5
    assert clean["metrics"]["val_top1"] == poisoned["metrics"]["val_top1"] > 95.0
    assert clean["metrics"]["top1"] > 95.0 and poisoned["metrics"]["top1"] < 5.0
    assert clean["primary"] == "top1" and clean["epochs"] == 8

    state = torch.load(tmp_path / "poisoned" / linear.GRID_FILE, weights_only=True)
    grid = linear.init_grid(16, 3, 2, seed=0)
    grid.load_state_dict(state["grid"])
    on_poisoned_test = linear.grid_topk(grid, xt, poisoned_labels)
    assert int(on_poisoned_test.argmax()) == 0  # test-based selection would pick 1e-6


def test_linear_probe_run_resumes_to_done(tmp_path, monkeypatch):
    """A second run() finds the finished grid checkpoint and trains no further epoch."""
    from folk.evals import linear

    x, y = separable_problem(n_per_class=30, seed=6)
    cfg = _probe_cfg(lrs=[0.1], epochs=3, batch_size=32)
    _fake_features(monkeypatch, (x, y), separable_problem(n_per_class=10, seed=6, noise_seed=6))
    first = linear.run(cfg, tmp_path, tmp_path / "out", LOG)
    mtime = (tmp_path / "out" / linear.GRID_FILE).stat().st_mtime_ns
    second = linear.run(cfg, tmp_path, tmp_path / "out", LOG)
    assert first["metrics"] == second["metrics"]
    assert (tmp_path / "out" / linear.GRID_FILE).stat().st_mtime_ns == mtime


def test_damaged_grid_checkpoint_is_retrained(tmp_path, caplog):
    """A truncated grid.pt is a cache: retrained from scratch with a warning naming it, to
    the same classifiers as a run that never had one."""
    from folk.evals.linear import train_grid

    x, y = separable_problem(n_per_class=20, seed=9)
    args = dict(num_classes=3, lrs=[0.1], epochs=2, batch_size=16, seed=0)
    clean = train_grid(x, y, **args)
    ckpt = tmp_path / "grid.pt"
    ckpt.write_bytes(b"PK\x03\x04 truncated")
    with caplog.at_level(logging.WARNING):
        again = train_grid(x, y, checkpoint=ckpt, **args)
    assert str(ckpt) in caplog.text and "starting afresh" in caplog.text
    assert torch.equal(clean[0].weight, again[0].weight)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2  # rewritten, loadable


def test_standardize_matches_numpy_and_uses_fitting_rows_only():
    """z-scores written out in numpy with the fitting rows' mean and population std; the
    held-out rows and the test set do not move the statistics."""
    from folk.evals.linear import standardize

    rng = np.random.default_rng(3)
    train = rng.normal(5.0, [0.01, 2.0, 30.0], size=(40, 3)).astype(np.float32)
    train[:, 0] += 100.0
    test = rng.normal(0.0, 1.0, size=(7, 3)).astype(np.float32)
    fit = np.arange(0, 40, 2)
    mean = train[fit].astype(np.float64).mean(axis=0)
    std = np.sqrt(((train[fit].astype(np.float64) - mean) ** 2).mean(axis=0))
    got_train, got_test = standardize(
        torch.from_numpy(train), torch.from_numpy(test), torch.from_numpy(fit)
    )
    np.testing.assert_allclose(
        got_train.numpy(), (train - mean) / (std + 1e-6), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(got_test.numpy(), (test - mean) / (std + 1e-6), rtol=1e-5, atol=1e-4)
    moved = train.copy()
    moved[1::2] *= 1000.0  # the rows outside fit
    again, _ = standardize(torch.from_numpy(moved), torch.from_numpy(test), torch.from_numpy(fit))
    np.testing.assert_allclose(again.numpy()[fit], got_train.numpy()[fit], rtol=1e-6)


def test_standardize_makes_the_probe_scale_free(tmp_path, monkeypatch):
    """Features shrunk to a spread of 1e-3 around a large offset: the plain probe cannot fit
    them with a fixed lr grid; the standardised probe gives the same accuracy as on the
    original features."""
    from folk.evals import linear

    x, y = separable_problem(n_per_class=50, seed=8)
    xt, yt = separable_problem(n_per_class=20, seed=8, noise_seed=8)
    shrunk, shrunk_t = x * 1e-3 + 10.0, xt * 1e-3 + 10.0
    results = {}
    for name, standardize, feats in [
        ("plain", False, (shrunk, shrunk_t)),
        ("std", True, (shrunk, shrunk_t)),
        ("std_original", True, (x, xt)),
    ]:
        cfg = _probe_cfg(lrs=[0.01], epochs=5, batch_size=32, standardize=standardize)
        _fake_features(monkeypatch, (feats[0], y), (feats[1], yt))
        results[name] = linear.run(cfg, tmp_path, tmp_path / name, LOG)["metrics"]["top1"]
    assert results["plain"] < 50.0
    assert results["std"] > 95.0
    assert results["std"] == pytest.approx(results["std_original"], abs=2.0)


# ---------------------------------------------------------------- features


def tiny_cfg(data_root: Path, **extra):
    from folk.config import load_config

    sets = {
        "data.dataset": "fashion_mnist",
        "data.root": str(data_root),
        "data.in_chans": 1,
        "data.num_classes": 10,
        "data.mean": [0.286],
        "data.std": [0.353],
        "data.train_subset": 200,
        "data.test_subset": 50,
        "data.num_workers": 0,
        "model.arch": "vit_tiny_patch16_224",
        "model.img_size": 32,
        "model.patch_size": 4,
        "model.depth": 2,
        "model.head_out_dim": 64,
        "model.head_hidden_dim": 32,
        "model.head_bottleneck_dim": 16,
        "eval.batch_size": 64,
        "eval.knn.k": [1, 5, 20],
        "eval.linear.epochs": 3,
        "eval.linear.lrs": [0.01, 0.1],
        "eval.linear.n_last_blocks": 2,
        "eval.linear.batch_size": 64,
    }
    sets.update(extra)
    return load_config(None, [as_set(k, v) for k, v in sets.items()])


@pytest.fixture
def fmnist_root(tmp_path):
    root = tmp_path / "fashion_mnist"
    root.mkdir()
    for f in FMNIST.glob("*.gz"):
        (root / f.name).symlink_to(f)
    return root


def make_run_dir(path: Path, cfg: dict, seed: int = 0, weights_cfg: dict | None = None) -> Path:
    from folk.models import build_backbone

    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    torch.manual_seed(seed)
    torch.save(build_backbone(weights_cfg or cfg).state_dict(), path / "backbone.pt")
    return path


def test_embedding_layout_matches_manual_forward():
    """n_last_blocks=2 + avgpool: [norm(block1)[CLS], norm(block2)[CLS], mean patch of
    norm(block2)], re-derived by running the blocks by hand."""
    import timm

    from folk.evals.features import embed_batch

    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=0,
        img_size=32,
        patch_size=4,
        depth=3,
        in_chans=1,
    ).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        h = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
        outs = []
        for blk in vit.blocks:
            h = blk(h)
            outs.append(vit.norm(h))
        want = torch.cat([outs[1][:, 0], outs[2][:, 0], outs[2][:, 1:].mean(dim=1)], dim=1)
        got = embed_batch(vit, x, n_last_blocks=2, avgpool_patchtokens=True)
        assert torch.allclose(got, want, atol=1e-5)
        assert torch.allclose(embed_batch(vit, x), vit.forward_features(x)[:, 0], atol=1e-6)
        resnet = timm.create_model("resnet18", pretrained=False, num_classes=0, in_chans=1).eval()
        y = torch.randn(2, 1, 64, 64)
        assert torch.allclose(
            embed_batch(resnet, y, 4, True), resnet.forward_features(y).mean(dim=(2, 3)), atol=1e-5
        )


@needs_fmnist
def test_feature_cache_reuse_and_invalidation(tmp_path, fmnist_root):
    from folk.data import build_dataset
    from folk.evals.features import extract_features, load_eval_backbone

    cfg = tiny_cfg(fmnist_root, **{"data.train_subset": 40})
    run_dir = make_run_dir(tmp_path / "run", cfg, seed=0)
    cache = tmp_path / "cache"
    backbone = load_eval_backbone(run_dir, cfg)
    feats, labels = extract_features(backbone, cfg, "train", cache, n_last_blocks=2, log=LOG)
    assert feats.dtype == torch.float32 and labels.dtype == torch.int64
    assert feats.shape == (40, 2 * 192)
    np.testing.assert_array_equal(labels.numpy(), build_dataset(cfg, "train").targets)
    assert len(list(cache.glob("*.pt"))) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("the backbone ran although the features are cached")

    backbone.forward_intermediates = refuse
    backbone.forward_features = refuse
    again, labels2 = extract_features(backbone, cfg, "train", cache, n_last_blocks=2, log=LOG)
    assert torch.equal(again, feats) and torch.equal(labels2, labels)

    # a subset by indices equals those rows of the full extraction (and is its own entry)
    sub, sub_labels = extract_features(
        load_eval_backbone(run_dir, cfg),
        cfg,
        "train",
        cache,
        n_last_blocks=2,
        indices=[3, 0, 7],
        log=LOG,
    )
    assert torch.allclose(sub, feats[[3, 0, 7]], atol=1e-5)
    assert torch.equal(sub_labels, labels[[3, 0, 7]])
    assert len(list(cache.glob("*.pt"))) == 2

    # new weights in backbone.pt: the cache must not answer
    make_run_dir(run_dir, cfg, seed=1)
    fresh, _ = extract_features(
        load_eval_backbone(run_dir, cfg), cfg, "train", cache, n_last_blocks=2, log=LOG
    )
    assert not torch.allclose(fresh, feats)
    assert len(list(cache.glob("*.pt"))) == 3


def test_undecodable_images_are_skipped(tmp_path, caplog):
    from PIL import Image

    from folk.evals.features import extract_features
    from folk.models import build_backbone

    root = tmp_path / "folder"
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        d = root / "train" / cls
        d.mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(d / f"{i}.png")
    (root / "train" / "b" / "broken.png").write_bytes(b"not an image at all")
    cfg = tiny_cfg(
        root,
        **{
            "data.dataset": "imagefolder",
            "data.in_chans": 3,
            "data.num_classes": 2,
            "data.mean": [0.5, 0.5, 0.5],
            "data.std": [0.25, 0.25, 0.25],
            "data.train_subset": 0,
            "data.train_split": "train",
            "eval.batch_size": 4,
        },
    )
    torch.manual_seed(0)
    backbone = build_backbone(cfg)
    with caplog.at_level(logging.WARNING):
        feats, labels = extract_features(backbone, cfg, "train", None, log=LOG)
    assert feats.shape == (6, 192)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert "1 image(s) could not be decoded" in caplog.text


# ---------------------------------------------------------------- folk eval, end to end


def _schema_keys():
    return {
        "schema",
        "run",
        "run_dir",
        "task",
        "variant",
        "dataset",
        "split",
        "metrics",
        "primary",
        "columns",
        "seed",
        "epochs",
        "git_sha",
        "wall_time_s",
        "finished_at",
    }


@needs_fmnist
def test_cli_knn_end_to_end(tmp_path, fmnist_root, capsys):
    from folk.cli import main

    cfg = tiny_cfg(fmnist_root)
    run_dir = make_run_dir(tmp_path / "runs" / "folk", cfg)
    assert main(["eval", "knn", "--run", str(run_dir)]) == 0
    out = run_dir / "eval" / "knn"
    record = json.loads((out / "metrics.json").read_text())
    assert set(record) == _schema_keys()
    assert record["schema"] == "folk.eval/1" and record["task"] == "knn"
    assert record["dataset"] == "fashion_mnist" and record["split"] == "test"
    assert record["primary"] == "top1_k20" and record["run"] == "folk"
    assert set(record["metrics"]) == {f"top{t}_k{k}" for t in (1, 5) for k in (1, 5, 20)}

    # the reported accuracy re-derived from the cached features with the explicit loop
    cached = {}
    for f in (run_dir / "eval" / "features").glob("features-*.pt"):
        blob = torch.load(f, weights_only=True)
        cached[f.name.split("-")[1]] = blob
    assert set(cached) == {"train", "test"}
    assert cached["train"]["features"].shape == (200, 192)
    want = reference_knn(
        cached["train"]["features"].numpy(),
        cached["train"]["labels"].numpy(),
        cached["test"]["features"].numpy(),
        20,
        0.07,
        10,
    )
    acc = 100.0 * np.mean(want == cached["test"]["labels"].numpy())
    assert record["metrics"]["top1_k20"] == pytest.approx(acc)
    assert acc > 20.0  # random ViT features on Fashion-MNIST are far above chance (10 %)

    before = (out / "metrics.json").read_bytes()
    capsys.readouterr()
    assert main(["eval", "knn", "--run", str(run_dir)]) == 0
    assert "nothing to do" in capsys.readouterr().err
    assert (out / "metrics.json").read_bytes() == before


@needs_fmnist
def test_cli_linear_end_to_end(tmp_path, fmnist_root):
    from folk.cli import main

    cfg = tiny_cfg(fmnist_root)
    run_dir = make_run_dir(tmp_path / "run", cfg)
    assert (
        main(["eval", "linear", "--run", str(run_dir), "--set", "eval.linear.val_fraction=0.2"])
        == 0
    )
    out = run_dir / "eval" / "linear"
    record = json.loads((out / "metrics.json").read_text())
    assert set(record) == _schema_keys()
    assert record["primary"] == "top1" and record["epochs"] == 3
    assert set(record["metrics"]) == {"top1", "top5", "val_top1", "best_lr"}
    assert record["metrics"]["best_lr"] in (0.01, 0.1)
    assert (out / "grid.pt").is_file()
    # features of the last 2 blocks: 2 x 192
    blob = torch.load(
        next((run_dir / "eval" / "features").glob("features-train-*.pt")), weights_only=True
    )
    assert blob["features"].shape == (200, 384)


def test_cli_errors_name_the_problem(tmp_path, capsys):
    from folk.cli import main

    missing = tmp_path / "no_such_run"
    assert main(["eval", "knn", "--run", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err

    cfg = tiny_cfg(tmp_path / "unused")
    deeper = tiny_cfg(tmp_path / "unused", **{"model.depth": 3})
    run_dir = make_run_dir(tmp_path / "run", cfg, weights_cfg=deeper)
    assert main(["eval", "knn", "--run", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "backbone.pt" in err and "do not match" in err
    assert not (run_dir / "eval" / "knn" / "metrics.json").exists()

    # more blocks asked for than the backbone has: refused before any data is read
    good = make_run_dir(tmp_path / "run2", cfg)
    assert main(["eval", "linear", "--run", str(good), "--set", "eval.linear.n_last_blocks=4"]) == 2
    assert "n_last_blocks" in capsys.readouterr().err
