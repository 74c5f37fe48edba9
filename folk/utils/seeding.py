"""The one way a per-sample draw is seeded: a seed derived from the sample's key, and the
global RNGs started from it for the sample's transform, then put back.

Two derivations, both here: the evaluations' ``key_seed`` and pre-training's own formula
(``sample_seed``). Every pre-trained run so far was made with the latter; moving it onto
``key_seed`` would change every augmentation of every run.
"""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Pre-training's seed of sample ``index`` in ``epoch`` (the loader's workers and
    ``data.on_device`` alike)."""
    # large odd multipliers keep (epoch, index) pairs from colliding for any realistic size
    return (seed * 1_000_003 + epoch * 2_654_435_761 + index * 97_531) % (2**63 - 1)


def key_seed(*key: int) -> int:
    """A 32-bit seed that is a function of ``key`` (integers, each taken modulo 2**32)."""
    return int(np.random.SeedSequence([k & 0xFFFFFFFF for k in key]).generate_state(1)[0])


@contextlib.contextmanager
def seeded_cpu_rng(seed: int):
    """Inside the block the CPU's global torch RNG (what torchvision's random transforms
    draw from) starts from ``seed``; after it, the RNG is where it was before. Only the CPU
    generator: ``torch.manual_seed`` would also queue a lazy seeding of every accelerator,
    recording a stack trace each time (~0.2 ms, per sample, in every worker)."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


@contextlib.contextmanager
def seeded_global_rngs(seed: int):
    """``seeded_cpu_rng`` for transforms that also draw from python's and numpy's RNGs
    (timm's RandAugment and random erasing), through ``torch.manual_seed``: fine-tuning's
    numbers were made that way, and in the main process it also reseeds the accelerator's
    generator, which is not put back."""
    py_state, np_state = random.getstate(), np.random.get_state()
    torch_state = torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
