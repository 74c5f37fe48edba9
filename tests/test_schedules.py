"""Per-iteration schedules against values computed by hand."""

from __future__ import annotations

import math

import numpy as np

from folk.config import load_config
from folk.schedules import cosine_schedule, linear_warmup_constant, pretrain_schedules


def test_cosine_with_warmup_matches_formula():
    s = cosine_schedule(1.0, 0.1, epochs=4, iters_per_epoch=5, warmup_epochs=1)
    assert len(s) == 20
    np.testing.assert_allclose(s[:5], [0, 0.2, 0.4, 0.6, 0.8])
    for i in range(15):
        want = 0.1 + 0.45 * (1 + math.cos(math.pi * i / 15))
        assert abs(s[5 + i] - want) < 1e-12
    assert s[5] == 1.0 and s[-1] > 0.1


def test_teacher_temperature_warmup():
    s = linear_warmup_constant(0.04, 0.07, warmup_epochs=2, epochs=5, iters_per_epoch=3)
    np.testing.assert_allclose(s[:6], np.linspace(0.04, 0.07, 6))
    assert (s[6:] == 0.07).all() and len(s) == 15


def test_pretrain_lr_uses_linear_scaling():
    cfg = load_config(
        None,
        [
            "pretrain.epochs=10",
            "pretrain.warmup_epochs=0",
            "pretrain.base_lr=3e-4",
            "pretrain.lr_base_batch=512",
        ],
    )
    s = pretrain_schedules(cfg, iters_per_epoch=4, world_batch=2048)
    assert abs(s["lr"][0] - 3e-4 * 4) < 1e-15
    assert s["momentum"][0] == 0.996 and abs(s["momentum"][-1] - 1.0) < 1e-4
