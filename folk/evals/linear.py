"""Linear probe on frozen features, with the learning rate chosen on held-out training data.

Protocol (a fast variant of DINO's linear evaluation, see docs/evaluations.md, "Linear probe"):
- features are extracted once, without augmentation, and cached (``extract_features``),
  as in DINOv2's logistic-regression evaluation; DINO (and DINOv2's linear evaluation)
  train on random-resized-crop + flip views instead, which costs a backbone pass per
  image per epoch. ViT: CLS tokens of the last ``eval.linear.n_last_blocks`` blocks
  (+ the average patch token with ``eval.linear.avgpool_patchtokens``);
- one linear classifier per learning rate of ``eval.linear.lrs``, all trained together
  on the same minibatches (as DINOv2 trains its grid): SGD, momentum 0.9, weight decay 0, cosine schedule (per
  iteration, to 0) over ``eval.linear.epochs``; learning rates are absolute (no
  batch-size scaling);
- a class-stratified ``eval.linear.val_fraction`` of the *training* split is held out;
  the classifiers train on the rest, the one with the best held-out top-1 is chosen,
  and only that classifier is evaluated on the test split. The test split never takes
  part in the choice; the chosen classifier is not retrained on the full training split.
- with ``eval.linear.standardize`` every feature is z-scored with the mean and standard
  deviation of the fitting part (MAE's probe puts a BatchNorm without affine
  parameters before the head; DINO's does not). A fixed learning-rate grid then suits
  features of any scale: a randomly initialised ResNet's pooled features have a per-dimension
  spread of ~3e-3 around a large mean, where plain SGD barely moves in 20 epochs.
- the grid's state is checkpointed atomically into the output directory every epoch and
  training resumes from it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from folk.data.subsets import split_train_val
from folk.engine.checkpoint import StateFile
from folk.engine.hooks import Boundary, Hook, call_hooks
from folk.errors import DataError
from folk.evals import features
from folk.evals.common import features_cache_dir
from folk.evals.knn import check_labels

MOMENTUM = 0.9
INIT_STD = 0.01  # DINO's LinearClassifier initialisation
GRID_FILE = "grid.pt"


# ---------------------------------------------------------------- the classifier grid


def init_grid(dim: int, num_classes: int, n_heads: int, seed: int) -> nn.ModuleList:
    """``n_heads`` linear classifiers, weights N(0, 0.01), zero bias, seeded."""
    gen = torch.Generator().manual_seed(seed)
    heads = nn.ModuleList()
    for _ in range(n_heads):
        head = nn.Linear(dim, num_classes)
        with torch.no_grad():
            head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * INIT_STD)
            head.bias.zero_()
        heads.append(head)
    return heads


def grid_logits(grid: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    """(B, n_heads, num_classes): every head on the same batch in one matrix product."""
    weight = torch.cat([h.weight for h in grid])
    bias = torch.cat([h.bias for h in grid])
    return F.linear(x, weight, bias).view(x.shape[0], len(grid), -1)


def make_optimizer(grid: nn.ModuleList, lrs: Sequence[float]) -> torch.optim.SGD:
    groups = [
        {"params": list(head.parameters()), "lr": lr, "base_lr": lr} for head, lr in zip(grid, lrs)
    ]
    return torch.optim.SGD(groups, lr=lrs[0], momentum=MOMENTUM, weight_decay=0.0)


def cosine_factor(iteration: int, total: int) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * iteration / total))


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The epoch's shuffle depends only on (seed, epoch), so a resumed run sees the same."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def _fingerprint(train_x: torch.Tensor, train_y: torch.Tensor, settings: dict) -> torch.Tensor:
    """What a checkpoint was trained on; a mismatch means it belongs to another setting."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    h.update(f"{tuple(train_x.shape)}|{float(train_x.double().sum()):.12e}".encode())
    h.update(train_y.cpu().numpy().tobytes())
    return torch.frombuffer(bytearray(h.digest()), dtype=torch.uint8).clone()


def train_grid(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    num_classes: int,
    lrs: Sequence[float],
    epochs: int,
    batch_size: int,
    seed: int,
    checkpoint: Path | None = None,
    log: logging.Logger | None = None,
    hooks: Sequence[Hook] = (),
) -> nn.ModuleList:
    """Train one classifier per learning rate on (train_x, train_y); resumes from
    ``checkpoint`` when it holds a grid of the same setting, a disposable cache
    (``folk.engine.checkpoint``). ``hooks``: called after every step, the epoch's last one
    after the epoch's checkpoint (``folk.engine.hooks``)."""
    log = log or logging.getLogger(__name__)
    device = train_x.device
    n, dim = train_x.shape
    grid = init_grid(dim, num_classes, len(lrs), seed).to(device)
    opt = make_optimizer(grid, lrs)
    settings = dict(
        lrs=list(map(float, lrs)),
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        num_classes=num_classes,
    )
    start_epoch = 0
    state_file = None
    if checkpoint is not None:
        # seconds of training on features cached elsewhere: a grid of other settings, or a
        # damaged one, is retrained
        state_file = StateFile(
            checkpoint,
            identity={"fingerprint": _fingerprint(train_x, train_y, settings)},
            disposable=True,
            other="a probe of other settings or features",
            log=log,
            required=("epoch", "grid", "optimizer"),
        )
        state = state_file.load()
        if state is not None:
            grid.load_state_dict(state["grid"])
            opt.load_state_dict(state["optimizer"])
            start_epoch = int(state["epoch"])
            log.info("linear: resuming from %s after epoch %d", checkpoint, start_epoch)

    train_y = train_y.to(device)
    steps_per_epoch = math.ceil(n / batch_size)
    total = steps_per_epoch * epochs
    for epoch in range(start_epoch, epochs):
        order = _epoch_order(n, seed, epoch).to(device)
        running = torch.zeros(len(lrs), device=device)
        for step in range(steps_per_epoch):
            factor = cosine_factor(epoch * steps_per_epoch + step, total)
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * factor
            idx = order[step * batch_size : (step + 1) * batch_size]
            logits = grid_logits(grid, train_x[idx])  # (B, L, C)
            target = train_y[idx].unsqueeze(1).expand(-1, len(lrs))
            # per-head mean loss, summed over heads: each head gets its own gradient
            per_head = F.cross_entropy(logits.permute(0, 2, 1), target, reduction="none").mean(
                dim=0
            )
            opt.zero_grad(set_to_none=True)
            per_head.sum().backward()
            opt.step()
            running += per_head.detach() * idx.numel()
            if step + 1 < steps_per_epoch:
                call_hooks(hooks, Boundary(epoch * steps_per_epoch + step + 1, epoch, False, False))
        if state_file is not None:
            state_file.save(
                {
                    "epoch": torch.tensor(epoch + 1),
                    "grid": grid.state_dict(),
                    "optimizer": opt.state_dict(),
                }
            )
        losses = (running / n).tolist()
        log.info(
            "linear epoch %d/%d: loss per lr %s",
            epoch + 1,
            epochs,
            " ".join(f"{lr:g}:{loss:.4f}" for lr, loss in zip(lrs, losses)),
        )
        call_hooks(
            hooks, Boundary((epoch + 1) * steps_per_epoch, epoch, True, state_file is not None)
        )
    return grid


@torch.no_grad()
def grid_topk(
    grid: nn.ModuleList, x: torch.Tensor, y: torch.Tensor, k: int = 1, batch_size: int = 4096
) -> torch.Tensor:
    """Top-k accuracy (%) of every head: float [n_heads]."""
    if x.shape[0] == 0:
        raise ValueError("accuracy of an empty set")
    correct = torch.zeros(len(grid), device=x.device)
    for start in range(0, x.shape[0], batch_size):
        logits = grid_logits(grid, x[start : start + batch_size])
        target = y[start : start + batch_size].to(x.device).view(-1, 1, 1)
        ranked = logits.topk(min(k, logits.shape[-1]), dim=-1).indices  # (B, L, k)
        correct += (ranked == target).any(dim=-1).sum(dim=0).float()
    return (100.0 * correct / x.shape[0]).cpu()


def select_lr(
    grid: nn.ModuleList, val_x: torch.Tensor, val_y: torch.Tensor, lrs: Sequence[float]
) -> tuple[int, torch.Tensor]:
    """(index of the best head on the held-out training data, every head's val top-1).
    Ties go to the earlier learning rate in the list. Sees validation data only."""
    val_top1 = grid_topk(grid, val_x, val_y, k=1)
    best = int(torch.argmax(val_top1))  # first maximum
    return best, val_top1


# ---------------------------------------------------------------- the evaluation


def split_indices(
    labels: torch.Tensor, val_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) positions: class-stratified, seeded (``folk.data.subsets``)."""
    train_idx, val_idx = split_train_val(labels.tolist(), val_fraction, seed)
    return (
        torch.as_tensor(list(train_idx), dtype=torch.int64),
        torch.as_tensor(list(val_idx), dtype=torch.int64),
    )


def standardize(
    train_x: torch.Tensor, test_x: torch.Tensor, fit_idx: torch.Tensor, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sets z-scored per feature with the statistics of ``train_x[fit_idx]`` alone
    (population std; a constant feature becomes 0), so neither the held-out part nor the
    test split informs the transform."""
    fit = train_x[fit_idx].double()
    mean, std = fit.mean(dim=0), fit.std(dim=0, unbiased=False)
    scale = 1.0 / (std + eps)
    return (
        ((train_x.double() - mean) * scale).to(train_x.dtype),
        ((test_x.double() - mean) * scale).to(test_x.dtype),
    )


def probe(
    cfg: dict,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    out_dir: Path,
    log,
) -> dict[str, float]:
    """The protocol of the module docstring on given features: ``{"top1", "val_top1",
    "best_lr"}`` (+ ``"top5"`` when data.num_classes > 5), test accuracies in percent.
    The grid is checkpointed to ``out_dir/grid.pt``."""
    lcfg = cfg["eval"]["linear"]
    seed = cfg["experiment"]["seed"]
    num_classes = cfg["data"]["num_classes"]
    check_labels(cfg, train_y, "train")
    check_labels(cfg, test_y, "test")

    fit_idx, val_idx = split_indices(train_y, lcfg["val_fraction"], seed)
    if len(fit_idx) == 0 or len(val_idx) == 0:
        raise DataError(
            f"eval.linear.val_fraction={lcfg['val_fraction']} leaves "
            f"{len(fit_idx)} training and {len(val_idx)} validation images of "
            f"{len(train_y)}"
        )
    log.info(
        "linear: %d training, %d validation (held out from train), %d test images; "
        "feature dim %d",
        len(fit_idx),
        len(val_idx),
        len(test_y),
        train_x.shape[1],
    )

    device = features.eval_device()
    train_x = train_x.to(device)
    test_x = test_x.to(device)
    if lcfg["standardize"]:
        train_x, test_x = standardize(train_x, test_x, fit_idx.to(device))
    grid = train_grid(
        train_x[fit_idx.to(device)],
        train_y[fit_idx],
        num_classes,
        lcfg["lrs"],
        lcfg["epochs"],
        lcfg["batch_size"],
        seed,
        checkpoint=Path(out_dir) / GRID_FILE,
        log=log,
    )
    best, val_top1 = select_lr(grid, train_x[val_idx.to(device)], train_y[val_idx], lcfg["lrs"])
    for lr, acc in zip(lcfg["lrs"], val_top1.tolist()):
        log.info("linear lr %g: val top1 %.2f", lr, acc)
    chosen = nn.ModuleList([grid[best]])
    metrics = {
        "top1": float(grid_topk(chosen, test_x, test_y, k=1)[0]),
        "val_top1": float(val_top1[best]),
        "best_lr": float(lcfg["lrs"][best]),
    }
    if num_classes > 5:
        metrics["top5"] = float(grid_topk(chosen, test_x, test_y, k=5)[0])
    log.info(
        "linear: best lr %g (val top1 %.2f) -> test top1 %.2f",
        metrics["best_lr"],
        metrics["val_top1"],
        metrics["top1"],
    )
    return metrics


def run(cfg: dict, run_dir: Path, out_dir: Path, log) -> dict:
    lcfg = cfg["eval"]["linear"]
    layout = dict(
        n_last_blocks=lcfg["n_last_blocks"], avgpool_patchtokens=lcfg["avgpool_patchtokens"]
    )
    backbone = features.load_eval_backbone(run_dir, cfg)
    cache = features_cache_dir(run_dir)
    # both splits are extracted before training so that a missing split fails early;
    # the test features are used only after the learning rate has been chosen
    train_x, train_y = features.extract_features(backbone, cfg, "train", cache, log=log, **layout)
    test_x, test_y = features.extract_features(backbone, cfg, "test", cache, log=log, **layout)
    del backbone
    metrics = probe(cfg, train_x, train_y, test_x, test_y, out_dir, log)
    return dict(
        dataset=cfg["data"]["dataset"],
        split="test",
        metrics=metrics,
        primary="top1",
        seed=cfg["experiment"]["seed"],
        epochs=lcfg["epochs"],
    )
