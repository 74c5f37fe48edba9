"""Process-group set-up from torchrun's or SLURM's environment variables."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist

from folk.engine.device import training_device


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _slurm_master_addr() -> str:
    nodelist = os.environ.get("SLURM_JOB_NODELIST", "")
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30
        ).stdout.split()
        return out[0] if out else "127.0.0.1"
    except (OSError, subprocess.SubprocessError):
        return "127.0.0.1"


def env_dist_info() -> DistInfo:
    """torchrun (RANK/WORLD_SIZE/LOCAL_RANK) first, then srun (SLURM_PROCID/NTASKS/LOCALID)."""
    env = os.environ
    if "WORLD_SIZE" in env and "RANK" in env:
        return DistInfo(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        info = DistInfo(
            int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
        )
        env.setdefault("MASTER_ADDR", _slurm_master_addr())
        env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))
        env["RANK"], env["WORLD_SIZE"] = str(info.rank), str(info.world_size)
        env["LOCAL_RANK"] = str(info.local_rank)
        return info
    return DistInfo()


def init_distributed() -> tuple[DistInfo, torch.device]:
    info = env_dist_info()
    device = training_device(info.local_rank)
    if info.enabled and not dist.is_initialized():
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo", rank=info.rank, world_size=info.world_size
        )
    return info, device


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t


_host_group = None


def host_min(values: list[int]) -> list[int]:
    """Element-wise minimum over ranks of host-side integers (a control-flow decision every
    rank must share). Through a gloo group: on NCCL the answer would wait for the device's
    queue, a host sync every step. The group is made on first use, by every rank at once."""
    global _host_group
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    if _host_group is None:
        _host_group = dist.new_group(backend="gloo")
    t = torch.tensor(values, dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MIN, group=_host_group)
    return t.tolist()
