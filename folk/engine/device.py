"""Where a training loop runs and in which precision: the one device choice and the one
mixed-precision rule of every loop (pre-training, fine-tuning, linear probe, segmentation)."""

from __future__ import annotations

from contextlib import nullcontext

import torch

# the values of pretrain.amp and eval.finetune.amp (folk.config.constraints)
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def training_device(local_rank: int = 0) -> torch.device:
    """The CUDA device of process ``local_rank`` on its node (made the current device), or
    the CPU on a machine without one."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    device = torch.device("cuda", local_rank % torch.cuda.device_count())
    torch.cuda.set_device(device)
    return device


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of an ``amp`` setting (``auto``: bf16 on CUDA, fp32 on the CPU),
    None for fp32."""
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return _AMP_DTYPES[amp]


def autocast(device: torch.device, dtype: torch.dtype | None):
    """The forward pass's precision context: ``dtype`` autocast, or nothing for fp32."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
