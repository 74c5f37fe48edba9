"""Per-iteration schedules (DINO style): one value per optimiser step, as numpy arrays."""
from __future__ import annotations

import numpy as np


def cosine_schedule(base: float, final: float, epochs: int, iters_per_epoch: int,
                    warmup_epochs: float = 0, warmup_start: float = 0.0) -> np.ndarray:
    """Linear warm-up from ``warmup_start`` to ``base`` over ``warmup_epochs``, then a cosine
    from ``base`` to ``final``; ``epochs * iters_per_epoch`` values."""
    total = epochs * iters_per_epoch
    warmup_iters = min(int(round(warmup_epochs * iters_per_epoch)), total)
    warmup = np.linspace(warmup_start, base, warmup_iters, endpoint=False) \
        if warmup_iters else np.array([])
    steps = np.arange(total - warmup_iters)
    span = max(len(steps), 1)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * steps / span))
    out = np.concatenate([warmup, cosine])
    assert len(out) == total
    return out


def linear_warmup_constant(start: float, end: float, warmup_epochs: float, epochs: int,
                           iters_per_epoch: int) -> np.ndarray:
    """``start`` -> ``end`` linearly over ``warmup_epochs``, then ``end`` (DINO's teacher
    temperature), per iteration."""
    total = epochs * iters_per_epoch
    warmup_iters = min(int(round(warmup_epochs * iters_per_epoch)), total)
    warmup = np.linspace(start, end, warmup_iters) if warmup_iters else np.array([])
    return np.concatenate([warmup, np.full(total - warmup_iters, end)])


def pretrain_schedules(cfg: dict, iters_per_epoch: int, world_batch: int) -> dict[str, np.ndarray]:
    """lr (linear scaling), weight decay, EMA momentum, teacher temperature."""
    p = cfg["pretrain"]
    epochs = p["epochs"]
    lr = p["base_lr"] * world_batch / p["lr_base_batch"]
    return {
        "lr": cosine_schedule(lr, p["min_lr"], epochs, iters_per_epoch, p["warmup_epochs"]),
        "wd": cosine_schedule(p["weight_decay"], p["weight_decay_end"], epochs, iters_per_epoch),
        "momentum": cosine_schedule(p["momentum_teacher"], p["momentum_teacher_end"], epochs,
                                    iters_per_epoch),
        "teacher_temp": linear_warmup_constant(p["warmup_teacher_temp"], p["final_teacher_temp"],
                                               p["warmup_teacher_temp_epochs"], epochs,
                                               iters_per_epoch),
    }
