"""``folk eval robustness``: accuracy of the fine-tuned classifier under corruptions and
frequency filtering of the test images.

The classifier is ``<run_dir>/eval/finetune/classifier.pt`` (written by
``folk eval finetune``). Each test image is resized and centre-cropped as for evaluation,
kept in [0, 1], corrupted or filtered (``folk.evals.corruptions``), and only then normalised
with ``data.mean``/``data.std``:

- ``eval.robustness.corruptions`` x ``eval.robustness.severities`` with the parameters of
  ``eval.robustness.severity_table`` (auto: ImageNet-C at 224 px, CIFAR-10-C near 32 px);
- circular low-pass and high-pass filters for each radius in ``eval.robustness.filter_radii``
  (stated at ``filter.mfm_radius_ref_size`` px, scaled to ``model.img_size`` like the MFM
  radius).

Metrics (top-1 in percent): ``clean_top1``, ``<corruption>_s<k>_top1``,
``<corruption>_mean_top1`` (over severities), ``lowpass_r<r>_top1``, ``highpass_r<r>_top1``
and the primary ``mean_corruption_top1`` (mean of the per-corruption means). Gaussian noise is
drawn from a generator seeded by (``experiment.seed``, batch number), the same draw for every
severity.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from folk.config import check_filter_radii
from folk.data import build_dataset, collate_skip_none
from folk.data.transforms import eval_transform, normalize
from folk.errors import ConfigError, RunDirError
from folk.evals import corruptions as C
from folk.evals.common import task_dir
from folk.evals.corruptions import CORRUPTIONS
from folk.evals.finetune import device_and_amp, load_classifier
from folk.models import inference_layout
from folk.metric_columns import (
    CLEAN,
    PASS_KINDS,
    ROBUSTNESS_PRIMARY,
    corruption_mean_metric,
    pass_name,
    severity_name,
    top1_name,
)
from folk.utils.progress import progress


def conditions(cfg: dict, device: torch.device) -> list[tuple[str, Callable]]:
    """(metric stem, function(images in [0, 1], batch number) -> images in [0, 1])."""
    rb = cfg["eval"]["robustness"]
    img_size = cfg["model"]["img_size"]
    table = rb["severity_table"] if rb["severity_table"] != "auto" else C.table_for_size(img_size)
    seed = int(cfg["experiment"]["seed"])
    out: list[tuple[str, Callable]] = [(CLEAN, lambda x, b: x)]

    def noise_generator(batch: int) -> torch.Generator:
        state = np.random.SeedSequence([seed, batch]).generate_state(2, dtype=np.uint32)
        return torch.Generator(device=device).manual_seed(int(state[0]) << 32 | int(state[1]))

    for name in rb["corruptions"]:
        for severity in rb["severities"]:
            out.append(
                (
                    severity_name(name, severity),
                    lambda x, b, n=name, s=severity: C.corrupt(
                        x, n, s, table=table, generator=noise_generator(b)
                    ),
                )
            )
    ref = cfg["filter"]["mfm_radius_ref_size"]
    for r in rb["filter_radii"]:
        px = C.scaled_size(r, img_size, ref)
        low, high = (pass_name(kind, r) for kind in PASS_KINDS)
        out.append((low, lambda x, b, px=px: C.low_pass(x, px)))
        out.append((high, lambda x, b, px=px: C.high_pass(x, px)))
    return out


def unit_transform(cfg: dict):
    """``eval_transform`` without its normalisation: [0, 1] tensors at ``model.img_size``."""

    steps = [t for t in eval_transform(cfg).transforms if not isinstance(t, v2.Normalize)]
    return v2.Compose(steps)


def _check_config(cfg: dict) -> None:
    rb = cfg["eval"]["robustness"]
    if not rb["corruptions"] or not rb["severities"]:
        raise ConfigError(
            "eval.robustness.corruptions and eval.robustness.severities must not "
            "be empty: the primary metric mean_corruption_top1 needs them"
        )
    unknown = [c for c in rb["corruptions"] if c not in CORRUPTIONS]
    if unknown:
        raise ConfigError(
            f"eval.robustness.corruptions: unknown {unknown}; choose from "
            f"{', '.join(CORRUPTIONS)}"
        )
    for key in ("corruptions", "severities", "filter_radii"):
        if len(set(rb[key])) != len(rb[key]):
            raise ConfigError(f"eval.robustness.{key} has repeated values: {rb[key]}")
    check_filter_radii(cfg)


def run(cfg: dict, run_dir: Path, out_dir: Path, log: logging.Logger) -> dict:
    _check_config(cfg)
    path = task_dir(run_dir, "finetune") / "classifier.pt"
    if not path.is_file():
        raise RunDirError(f"{path} not found: run `folk eval finetune --run {run_dir}` first")
    device, amp_dtype = device_and_amp(cfg)
    model = load_classifier(cfg, path).to(device).eval()
    test = build_dataset(cfg, "test", transform=unit_transform(cfg))
    loader = DataLoader(
        test,
        batch_size=cfg["eval"]["batch_size"],
        shuffle=False,
        num_workers=cfg["data"]["num_workers"],
        collate_fn=collate_skip_none,
        pin_memory=device.type == "cuda",
    )
    conds = conditions(cfg, device)
    correct = {name: 0 for name, _ in conds}
    total = skipped = 0
    with torch.inference_mode(), inference_layout(model, device):
        for batch, (images, labels, n_skipped) in enumerate(
            progress(loader, desc="robustness", unit="batch", leave=False)
        ):
            skipped += int(n_skipped)
            if len(labels) == 0:
                continue
            images, labels = images.to(device, non_blocking=True), labels.to(device)
            for name, fn in conds:
                x = normalize(fn(images, batch), cfg)
                with torch.autocast(
                    device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
                ):
                    pred = model(x).argmax(dim=1)
                correct[name] += int((pred == labels).sum())
            total += len(labels)
    if total == 0:
        raise RunDirError(f"test split of '{cfg['data']['dataset']}' gave no decodable image")
    if skipped:
        log.warning("test: %d undecodable image(s) skipped", skipped)

    metrics = {top1_name(name): 100.0 * correct[name] / total for name, _ in conds}
    rb = cfg["eval"]["robustness"]
    per_corruption = []
    for c in rb["corruptions"]:
        mean = float(np.mean([metrics[top1_name(severity_name(c, s))] for s in rb["severities"]]))
        metrics[corruption_mean_metric(c)] = mean
        per_corruption.append(mean)
    metrics[ROBUSTNESS_PRIMARY] = float(np.mean(per_corruption))
    log.info(
        "clean %.2f, mean under corruption %.2f (%s)",
        metrics[top1_name(CLEAN)],
        metrics[ROBUSTNESS_PRIMARY],
        ", ".join(f"{c} {metrics[corruption_mean_metric(c)]:.2f}" for c in rb["corruptions"]),
    )
    return {
        "dataset": getattr(test, "name", cfg["data"]["dataset"]),
        "split": "test",
        "metrics": metrics,
        "primary": ROBUSTNESS_PRIMARY,
        "seed": cfg["experiment"]["seed"],
        "epochs": 0,
    }
