"""Per-iteration schedules: one value per optimiser step, as numpy arrays."""

from __future__ import annotations

import numpy as np


def cosine_schedule(
    base: float,
    final: float,
    epochs: int,
    iters_per_epoch: int,
    warmup_epochs: float = 0,
    warmup_start: float = 0.0,
    after_warmup: bool = True,
) -> np.ndarray:
    """Linear warm-up from ``warmup_start`` towards ``base`` over ``warmup_epochs``, then a
    cosine from ``base`` to ``final``; ``epochs * iters_per_epoch`` values.

    ``after_warmup=True`` (DINO's ``cosine_scheduler``): the cosine spans the steps after the
    warm-up. ``False`` (timm's ``CosineLRScheduler`` with ``warmup_prefix=False``, which MFM
    uses): the cosine spans the whole run, step ``t`` of it at ``t``, and the warm-up,
    ``warmup_start + t * (base - warmup_start) / warmup_iters``, replaces its first steps.
    """
    total = epochs * iters_per_epoch
    warmup_iters = min(int(round(warmup_epochs * iters_per_epoch)), total)
    warmup = warmup_start + np.arange(warmup_iters) * (base - warmup_start) / max(warmup_iters, 1)
    if after_warmup:
        steps, span = np.arange(total - warmup_iters), max(total - warmup_iters, 1)
    else:
        steps, span = np.arange(warmup_iters, total), max(total, 1)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * steps / span))
    out = np.concatenate([warmup, cosine])
    assert len(out) == total
    return out


def linear_warmup_constant(
    start: float, end: float, warmup_epochs: float, epochs: int, iters_per_epoch: int
) -> np.ndarray:
    """``start`` -> ``end`` linearly over ``warmup_epochs``, then ``end`` (DINO's teacher
    temperature), per iteration."""
    total = epochs * iters_per_epoch
    warmup_iters = min(int(round(warmup_epochs * iters_per_epoch)), total)
    warmup = np.linspace(start, end, warmup_iters) if warmup_iters else np.array([])
    return np.concatenate([warmup, np.full(total - warmup_iters, end)])


def learning_rates(cfg: dict, world_batch: int) -> tuple[float, float, float]:
    """(peak, warm-up start, final) learning rates for a global batch: the peak scales
    linearly with the batch; the other two as well when ``pretrain.scale_min_lr`` (MFM)."""
    p = cfg["pretrain"]
    scale = world_batch / p["lr_base_batch"]
    low = scale if p["scale_min_lr"] else 1.0
    return p["base_lr"] * scale, p["warmup_lr"] * low, p["min_lr"] * low


def pretrain_schedules(cfg: dict, iters_per_epoch: int, world_batch: int) -> dict[str, np.ndarray]:
    """lr (linear scaling), weight decay, EMA momentum, teacher temperature."""
    p = cfg["pretrain"]
    epochs = p["epochs"]
    peak, start, final = learning_rates(cfg, world_batch)
    return {
        "lr": cosine_schedule(
            peak,
            final,
            epochs,
            iters_per_epoch,
            p["warmup_epochs"],
            warmup_start=start,
            after_warmup=p["cosine_after_warmup"],
        ),
        "wd": cosine_schedule(p["weight_decay"], p["weight_decay_end"], epochs, iters_per_epoch),
        "momentum": cosine_schedule(
            p["momentum_teacher"], p["momentum_teacher_end"], epochs, iters_per_epoch
        ),
        "teacher_temp": linear_warmup_constant(
            p["warmup_teacher_temp"],
            p["final_teacher_temp"],
            p["warmup_teacher_temp_epochs"],
            epochs,
            iters_per_epoch,
        ),
    }
