"""The one way a per-sample draw is seeded."""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def seeded_cpu_rng(seed: int):
    """Inside the block the CPU's global torch RNG (what torchvision's random transforms
    draw from) starts from ``seed``; after it, the RNG is where it was before. Only the CPU
    generator: ``torch.manual_seed`` would also queue a lazy seeding of every accelerator,
    recording a stack trace each time (~0.2 ms, per sample, in every worker)."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield
