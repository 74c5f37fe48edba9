"""What every evaluation shares: its output directory, its metrics.json, its log."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from folk.utils.io import atomic_write_json
from folk.utils.provenance import git_sha, now_iso

SCHEMA = "folk.eval/1"
TASKS = ("knn", "linear", "finetune", "fewshot", "segmentation", "robustness", "pixels")


def task_dir(run_dir: Path, task: str, variant: str = "") -> Path:
    return Path(run_dir) / "eval" / (f"{task}-{variant}" if variant else task)


def features_cache_dir(run_dir: Path) -> Path:
    """One feature cache per run, shared by k-NN, linear probe and few-shot regression, so a
    backbone runs over each dataset once."""
    return Path(run_dir) / "eval" / "features"


def is_done(out_dir: Path) -> bool:
    return (Path(out_dir) / "metrics.json").is_file()


def task_logger(out_dir: Path, task: str) -> logging.Logger:
    """Logs to ``<out_dir>/log.txt`` (appending across resumes) and to stderr."""
    out_dir.mkdir(parents=True, exist_ok=True)
    log = logging.getLogger(f"folk.eval.{task}.{out_dir}")
    log.setLevel(logging.INFO)
    log.propagate = False
    if not log.handlers:
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
        for handler in (logging.FileHandler(out_dir / "log.txt"), logging.StreamHandler()):
            handler.setFormatter(fmt)
            log.addHandler(handler)
    return log


def write_metrics(out_dir: Path, *, cfg: dict, run_dir: Path, task: str, variant: str,
                  dataset: str, split: str, metrics: dict[str, float], primary: str,
                  seed: int, epochs: int, started: float) -> dict:
    """Write the one fixed schema of DESIGN.md; written last, so its presence means done."""
    record = {
        "schema": SCHEMA,
        "run": cfg["experiment"]["run_name"] or Path(run_dir).name,
        "run_dir": str(run_dir),
        "task": task,
        "variant": variant,
        "dataset": dataset,
        "split": split,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "primary": primary,
        "seed": int(seed),
        "epochs": int(epochs),
        "git_sha": git_sha()[0],
        "wall_time_s": round(time.time() - started, 3),
        "finished_at": now_iso(),
    }
    if primary not in record["metrics"]:
        raise ValueError(f"primary metric {primary!r} not among {sorted(metrics)}")
    atomic_write_json(Path(out_dir) / "metrics.json", record)
    return record
