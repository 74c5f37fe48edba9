"""Reading the clock around device work."""

from __future__ import annotations

import torch


def synchronize(device) -> None:
    """Wait for the work queued on ``device``: CUDA runs it asynchronously, so the clock read
    after a launch would time the launch only."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
