"""Pre-training as the commands run it: the engine's loop, given the evaluations' k-NN
monitor. The one place where the two layers meet, so that ``folk.engine`` imports nothing
from ``folk.evals``."""
from __future__ import annotations

from pathlib import Path

from folk.engine import pretrain as engine
from folk.evals import monitor


def pretrain(cfg: dict, run_dir: str | Path, stop_after: int | None = None) -> dict:
    """``folk.engine.pretrain.pretrain`` with the k-NN monitor (looked up when called)."""
    return engine.pretrain(cfg, run_dir, stop_after, monitor=monitor.knn_monitor)
