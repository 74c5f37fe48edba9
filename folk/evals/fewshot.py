"""``folk eval fewshot``: learning from few labels (spec section 5, a [decision]).

Two protocols, each repeated for every seed in ``eval.fewshot.seeds``:

(a) Label fractions: fine-tuning (``folk.evals.finetune.train_classifier``, the full
    fine-tuning recipe) on a class-balanced ``fraction`` of the training labels, for each
    fraction in ``eval.fewshot.fractions``, for ``eval.fewshot.fraction_epochs`` epochs
    (0: ``eval.finetune.epochs``). Metric ``frac<percent>pct_top1``.
(b) k shots: multinomial logistic regression (scikit-learn, lbfgs) on frozen, L2-normalised
    features (``extract_features``: CLS token of the run's ``eval.feature_source`` backbone)
    of k images per class, for each k in ``eval.fewshot.shots``. Metric ``shot<k>_top1``.
    The inverse regularisation C is chosen from ``eval.fewshot.logreg_c`` by stratified
    cross-validation on the k-shot training set alone (``min(k, 5)`` folds, each holding out
    at least one image per class; ties go to the smaller C); the test features are used only
    to score the refitted winner. With k = 1 no image per class can be held out, so C is
    ``eval.fewshot.logreg_c_fallback``.

Subsets are drawn from the whole training split (neither ``data.train_subset`` nor
``eval.train_subset`` applies) with
``folk.data.subsets.class_balanced_indices`` (seeded, class-balanced, nested across sizes);
when ``folk prepare fewshot`` has written ``<data.root>/fewshot/<fraction|shot>..._seed<s>.txt``
that list is read instead. A user list ``data.fewshot_file`` adds one more training set,
evaluated by both protocols: ``file_top1`` (fine-tuning) and ``file_logreg_top1``.

Reported: ``<name>_mean`` and ``<name>_std`` (sample standard deviation, 0 for one seed) over
seeds; primary: ``shot<smallest k>_top1_mean`` (or the smallest fraction's when there are no
shots).
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from folk.data.classification import build_base_dataset
from folk.data.subsets import class_balanced_indices, fewshot_list_path, read_file_list
from folk.errors import ConfigError, DataError
from folk.evals.common import features_cache_dir
from folk.evals.features import extract_features, load_eval_backbone
from folk.evals.finetune import train_classifier
from folk.metric_columns import fraction_name, shot_name

LOGREG_MAX_ITER = 1000
MAX_CV_FOLDS = 5


# ------------------------------------------------------------------ names


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


# ------------------------------------------------------------------ subsets


def fewshot_subset(
    cfg: dict,
    dataset,
    *,
    seed: int,
    fraction: float | None = None,
    shot: int | None = None,
    log: logging.Logger | None = None,
) -> np.ndarray:
    """Sorted indices into the whole training split: the list written by
    ``folk prepare fewshot`` when it exists, else the seeded class-balanced draw."""
    path = fewshot_list_path(cfg, seed=seed, fraction=fraction, shot=shot)
    if path.is_file():
        if log:
            log.info("few-shot list %s", path)
        return read_file_list(path, dataset)
    kwargs = {"fraction": fraction} if fraction is not None else {"per_class": shot}
    return class_balanced_indices(
        np.asarray(dataset.targets),
        seed=seed,
        class_names=getattr(dataset, "classes", None),
        **kwargs,
    )


# ------------------------------------------------------------------ logistic regression


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def select_c(
    train_x: np.ndarray, train_y: np.ndarray, cs: Sequence[float], *, seed: int, fallback_c: float
) -> tuple[float, dict[float, float]]:
    """C with the best stratified cross-validated accuracy on the training set alone;
    ``(C, {C: mean CV accuracy})``; ``(fallback_c, {})`` when a class has one image."""
    counts = np.bincount(np.asarray(train_y))
    counts = counts[counts > 0]
    folds = min(int(counts.min()), MAX_CV_FOLDS)
    if folds < 2:
        return float(fallback_c), {}
    cs = sorted(float(c) for c in cs)  # GridSearchCV keeps the first of tied candidates
    search = GridSearchCV(
        LogisticRegression(max_iter=LOGREG_MAX_ITER, random_state=seed),
        {"C": cs},
        scoring="accuracy",
        refit=False,
        n_jobs=1,
        cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        _quiet_convergence()
        search.fit(train_x, train_y)
    scores = {c: float(s) for c, s in zip(cs, search.cv_results_["mean_test_score"])}
    return float(search.best_params_["C"]), scores


def _quiet_convergence() -> None:
    warnings.simplefilter("ignore", category=ConvergenceWarning)


def logreg_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    cs: Sequence[float],
    *,
    seed: int,
    fallback_c: float,
) -> tuple[float, float]:
    """(test top-1 in percent, chosen C): C chosen on the training set (``select_c``), the
    model refitted on the whole training set, then scored once on the test set."""
    train_x, test_x = l2_normalise(train_x), l2_normalise(test_x)
    c, _ = select_c(train_x, train_y, cs, seed=seed, fallback_c=fallback_c)
    clf = LogisticRegression(C=c, max_iter=LOGREG_MAX_ITER, random_state=seed)
    with warnings.catch_warnings():
        _quiet_convergence()
        clf.fit(train_x, train_y)
    return 100.0 * float(clf.score(test_x, test_y)), c


# ------------------------------------------------------------------ the task


def _check_config(cfg: dict) -> None:
    fs = cfg["eval"]["fewshot"]
    if not fs["fractions"] and not fs["shots"] and not cfg["data"]["fewshot_file"]:
        raise ConfigError(
            "eval.fewshot.fractions and eval.fewshot.shots are both empty "
            "(and data.fewshot_file is unset): nothing to evaluate"
        )
    if len(set(fs["seeds"])) != len(fs["seeds"]):
        raise ConfigError(f"eval.fewshot.seeds has repeated seeds: {fs['seeds']}")


def run(cfg: dict, run_dir: Path, out_dir: Path, log: logging.Logger) -> dict:
    _check_config(cfg)
    fs = cfg["eval"]["fewshot"]
    seeds = [int(s) for s in fs["seeds"]]
    train = build_base_dataset(cfg, "train")
    # every subset first: a missing class or a bad list fails before any training
    frac_sets = {
        (f, s): fewshot_subset(cfg, train, seed=s, fraction=f, log=log)
        for f in fs["fractions"]
        for s in seeds
    }
    shot_sets = {
        (k, s): fewshot_subset(cfg, train, seed=s, shot=k, log=log)
        for k in fs["shots"]
        for s in seeds
    }
    user_file = cfg["data"]["fewshot_file"]
    file_set = read_file_list(Path(user_file), train) if user_file else None

    per_seed: dict[str, list[float]] = {}
    single: dict[str, float] = {}

    # (b) logistic regression on frozen features: cheap, so first
    if shot_sets or file_set is not None:
        train_x, train_y, test_x, test_y, position = _frozen_features(
            cfg,
            run_dir,
            out_dir,
            log,
            list(shot_sets.values()) + ([file_set] if file_set is not None else []),
        )
        for (k, s), idx in shot_sets.items():
            rows = position(idx)
            acc, c = logreg_accuracy(
                train_x[rows],
                train_y[rows],
                test_x,
                test_y,
                fs["logreg_c"],
                seed=s,
                fallback_c=fs["logreg_c_fallback"],
            )
            log.info("%d-shot, seed %d: %d images, C=%g, top1 %.2f", k, s, len(rows), c, acc)
            per_seed.setdefault(f"{shot_name(k)}_top1", []).append(acc)
        if file_set is not None:
            rows = position(file_set)
            acc, c = logreg_accuracy(
                train_x[rows],
                train_y[rows],
                test_x,
                test_y,
                fs["logreg_c"],
                seed=cfg["experiment"]["seed"],
                fallback_c=fs["logreg_c_fallback"],
            )
            log.info(
                "%s: logistic regression on %d images, C=%g, top1 %.2f",
                user_file,
                len(rows),
                c,
                acc,
            )
            single["file_logreg_top1"] = acc

    # (a) fine-tuning on label fractions (each one resumable and skipped once done)
    epochs = fs["fraction_epochs"] or cfg["eval"]["finetune"]["epochs"]
    dataset_name = train.name
    for (f, s), idx in frac_sets.items():
        name = fraction_name(f)
        result = train_classifier(
            cfg,
            run_dir,
            out_dir,
            log,
            train_indices=idx,
            epochs=epochs,
            tag=f"{name}-seed{s}",
            seed=s,
        )
        log.info("%s, seed %d: %d images, top1 %.2f", name, s, len(idx), result["metrics"]["top1"])
        per_seed.setdefault(f"{name}_top1", []).append(result["metrics"]["top1"])
    if file_set is not None:
        result = train_classifier(
            cfg,
            run_dir,
            out_dir,
            log,
            train_indices=file_set,
            epochs=epochs,
            tag="file",
            seed=cfg["experiment"]["seed"],
        )
        single["file_top1"] = result["metrics"]["top1"]

    metrics: dict[str, float] = {}
    for name, values in per_seed.items():
        metrics[f"{name}_mean"], metrics[f"{name}_std"] = mean_std(values)
    metrics.update(single)
    if fs["shots"]:
        primary = f"{shot_name(min(fs['shots']))}_top1_mean"
    elif fs["fractions"]:
        primary = f"{fraction_name(min(fs['fractions']))}_top1_mean"
    else:
        primary = "file_top1"
    return {
        "dataset": dataset_name,
        "split": "test",
        "metrics": metrics,
        "primary": primary,
        "seed": seeds[0],
        "epochs": epochs if frac_sets or file_set is not None else 0,
    }


def _frozen_features(
    cfg: dict, run_dir: Path, out_dir: Path, log: logging.Logger, subsets: list[np.ndarray]
):
    """Features of the union of the training subsets and of the whole test split, and a
    function mapping training-split indices to rows of the training features."""

    backbone = load_eval_backbone(run_dir, cfg)
    cache = features_cache_dir(run_dir)
    union = np.unique(np.concatenate(subsets)).astype(np.int64)
    # subsets index the whole training split: extract from it, not from data.train_subset
    whole = copy.deepcopy(cfg)
    whole["data"]["train_subset"] = 0
    train_x, train_y = extract_features(
        backbone, whole, "train", cache, indices=union.tolist(), log=log
    )
    if len(train_x) != len(union):
        raise DataError(
            f"{len(union) - len(train_x)} image(s) of the few-shot training sets "
            f"could not be decoded; replace them or remove them from the "
            f"dataset at data.root '{cfg['data']['root']}'"
        )
    test_x, test_y = extract_features(backbone, cfg, "test", cache, log=log)
    to_numpy = lambda t: t.numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    row_of = {int(i): r for r, i in enumerate(union)}

    def position(idx: np.ndarray) -> np.ndarray:
        return np.asarray([row_of[int(i)] for i in idx], dtype=np.int64)

    return (to_numpy(train_x), to_numpy(train_y), to_numpy(test_x), to_numpy(test_y), position)
