"""``eval.train_subset`` / ``eval.test_subset``: the labelled images of the evaluations,
apart from the pre-training images (``data.*_subset``). Checked against a class-balanced
draw written out here, on real Fashion-MNIST; and through the report (dataset label,
sampling error; the protocol line: tests/test_report_protocol.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_overrides


def explicit_balanced_draw(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """The documented draw (folk/data/subsets.py), written out: one uniform key per item
    from numpy's PCG64 with the seed; each class keeps its ``per_class`` items of smallest
    key; the indices sorted."""
    keys = np.random.default_rng(seed).random(len(labels))
    chosen = []
    for c in sorted(set(labels.tolist())):
        items = [i for i in range(len(labels)) if labels[i] == c]
        items.sort(key=lambda i: keys[i])
        chosen += items[:per_class]
    return np.array(sorted(chosen))


def make_run_dir(path: Path, root: Path, *extra: str) -> Path:
    from folk.config import load_config, save_config

    path.mkdir(parents=True)
    save_config(load_config(None, tiny_overrides(root) + list(extra)), path / "config.yaml")
    return path


def test_null_means_the_pre_training_subsets_and_resolves_to_them(tiny_cfg):
    from folk.config import evaluated_subset

    cfg = tiny_cfg()  # data.train_subset 64, data.test_subset 40; eval.* not set
    assert (cfg["eval"]["train_subset"], cfg["eval"]["test_subset"]) == (64, 40)
    cfg = tiny_cfg("eval.train_subset=300", "eval.test_subset=0")
    assert (cfg["data"]["train_subset"], cfg["data"]["test_subset"]) == (64, 40)
    assert (evaluated_subset(cfg, "train"), evaluated_subset(cfg, "test")) == (300, 0)
    again = tiny_cfg("eval.train_subset=300", "eval.test_subset=0", "eval.train_subset=null")
    assert evaluated_subset(again, "train") == 64


@pytest.mark.parametrize(
    "item, words",
    [
        ("eval.train_subset=-5", "'eval.train_subset' = -5 must be >= 0"),
        ("eval.test_subset=many", "'eval.test_subset' must be an integer, got 'many'"),
        ("eval.test_subset=0.5", "'eval.test_subset' must be an integer"),
    ],
)
def test_a_bad_value_names_the_key(tiny_cfg, item, words):
    from folk.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        tiny_cfg(item)
    assert words in str(err.value)


def test_an_evaluation_draws_its_own_class_balanced_subset(fashion_root, tmp_path):
    """Pre-trained on 64 images, evaluated on 300 labelled (30 per class, the explicit draw
    with the run's seed) and 50 test images; the pre-training's own split stays 64."""
    from folk.config import eval_config, load_run_config
    from folk.data import build_base_dataset, build_dataset

    run = make_run_dir(
        tmp_path / "run",
        fashion_root,
        "experiment.seed=3",
        "eval.train_subset=300",
        "eval.test_subset=50",
    )
    pre = load_run_config(run)
    assert len(build_dataset(pre, "train")) == 64 and len(build_dataset(pre, "test")) == 40

    cfg = eval_config(run, None, [])
    assert (cfg["data"]["train_subset"], cfg["data"]["test_subset"]) == (300, 50)
    for split, n in (("train", 300), ("test", 50)):
        labels = np.asarray(build_base_dataset(cfg, split).targets)
        sub = build_dataset(cfg, split)
        want = explicit_balanced_draw(labels, n // 10, seed=3)
        assert np.array_equal(sub.indices, want), split
        assert np.bincount(sub.targets, minlength=10).tolist() == [n // 10] * 10

    # an evaluation's --set changes it for that evaluation only; 0 is the whole split
    whole = eval_config(run, None, ["eval.test_subset=0"])
    assert len(build_dataset(whole, "test")) == 10_000
    assert load_run_config(run)["eval"]["test_subset"] == 50


def test_a_subset_larger_than_the_split_names_the_eval_key(fashion_root, tmp_path):
    from folk.config import eval_config
    from folk.data import build_dataset
    from folk.errors import DataError

    run = make_run_dir(tmp_path / "run", fashion_root)
    cfg = eval_config(run, None, ["eval.test_subset=20000"])
    with pytest.raises(DataError) as err:
        build_dataset(cfg, "test")
    text = str(err.value)
    assert "eval.test_subset" in text and "20000" in text and "(10000 images)" in text


def test_the_feature_cache_follows_the_evaluated_subset(fashion_root, tmp_path):
    import torch

    from folk.config import eval_config
    from folk.evals.features import cache_key

    run = make_run_dir(tmp_path / "run", fashion_root)
    net = torch.nn.Linear(2, 2)
    keys = {
        n: cache_key(
            net, eval_config(run, None, [f"eval.train_subset={n}"]), "train", 1, False, None, None
        )
        for n in (64, 200)
    }
    assert keys[64] != keys[200]
    assert cache_key(net, eval_config(run, None, []), "train", 1, False, None, None) == keys[64]


def test_the_report_states_the_labelled_images(tmp_path):
    """The dataset label says how many labelled images the evaluations saw when they are
    not the pre-training's; a one-seed claim's
    sampling error uses eval.test_subset's n: 100 * sqrt(2 * 0.8 * 0.2 / n)."""
    from folk.config import load_config
    from folk.report.claims import _sampling_error
    from folk.report.collect import Run
    from folk.report.naming import run_dataset_label

    base = ["data.dataset=fashion_mnist", "data.train_subset=0", "data.test_subset=0"]
    cfg = load_config(None, base + ["eval.train_subset=2400", "eval.test_subset=2500"])
    assert run_dataset_label(cfg) == "Fashion-MNIST (2400 labelled)"
    same = load_config(None, base[:1] + ["data.train_subset=2400", "data.test_subset=1000"])
    assert run_dataset_label(same) == "Fashion-MNIST (2400 img)"
    run = Run(dir=tmp_path, rel="x", cfg=cfg, done=None, evals=[])
    assert _sampling_error(80.0, 80.0, run) == pytest.approx(100 * (2 * 0.16 / 2500) ** 0.5)
    whole = load_config(None, base + ["eval.train_subset=2400"])
    assert (
        _sampling_error(80.0, 80.0, Run(dir=tmp_path, rel="x", cfg=whole, done=None, evals=[]))
        is None
    )
