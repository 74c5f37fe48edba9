"""Pre-training as the commands run it: the engine's loop, given the evaluations' k-NN
monitor. The one place where the two layers meet, so that ``folk.engine`` imports nothing
from ``folk.evals``."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from folk.engine import pretrain as engine
from folk.engine.hooks import Hook
from folk.evals import monitor


def pretrain(cfg: dict, run_dir: str | Path, hooks: Sequence[Hook] = ()) -> dict:
    """``folk.engine.pretrain.pretrain`` with the k-NN monitor (looked up when called)."""
    return engine.pretrain(cfg, run_dir, hooks, monitor=monitor.knn_monitor)
