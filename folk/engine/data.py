"""Pre-training input: a resumable epoch sampler and augmentation seeded per sample.

A sample's views are a pure function of (seed, epoch, index), whatever worker or process
made them, so a resumed run sees exactly the views an uninterrupted one would have seen.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Sampler

from folk.utils.seeding import sample_seed, seeded_cpu_rng


class SeededViews(Dataset):
    """Wraps a dataset of ``(PIL, label)``; indexed by ``(epoch, index)`` pairs."""

    def __init__(self, base: Dataset, transform, seed: int):
        self.base, self.transform, self.seed = base, transform, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        item = self.base[index]
        if item is None:
            return None
        image, label = item
        with seeded_cpu_rng(sample_seed(self.seed, epoch, index)):
            views = self.transform(image)
        return views, label


class EpochSampler(Sampler):
    """Seeded permutation per epoch, sharded over ranks, whole iterations only, able to
    start part-way through an epoch (``set_epoch(epoch, start)``, start in samples)."""

    def __init__(
        self, n: int, samples_per_epoch_per_rank: int, rank: int, world_size: int, seed: int
    ):
        self.n, self.per_rank = n, samples_per_epoch_per_rank
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.per_rank - self.start

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g)
        used = perm[: self.per_rank * self.world_size]
        shard = used[self.rank :: self.world_size][self.start :]
        return iter([(self.epoch, int(i)) for i in shard])
