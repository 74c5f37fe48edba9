"""What every evaluation shares: its output directory, its metrics.json, its log."""

from __future__ import annotations

import json
import logging
import math
import re
import time
from pathlib import Path

from folk.errors import ConfigError
from folk.eval_tasks import declared_columns
from folk.metric_columns import columns_problem
from folk.utils.io import atomic_write_json
from folk.utils.provenance import git_sha, now_iso

log = logging.getLogger(__name__)

SCHEMA = "folk.eval/1"
# a variant names one directory: no separator, no "..", nothing hidden
VARIANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_RECORD_KEYS = (
    "schema",
    "run",
    "task",
    "variant",
    "dataset",
    "split",
    "metrics",
    "primary",
    "seed",
    "epochs",
    "finished_at",
)


def check_variant(variant: str) -> str:
    """``variant`` when it is a plain name (letters, digits, '_', '-', '.'; no '..');
    a ConfigError otherwise, so that no output can land outside ``<run_dir>/eval``."""
    if variant and (not VARIANT_RE.match(variant) or ".." in variant):
        raise ConfigError(
            f"--variant = {variant!r} is not a plain name (letters, digits, "
            f"'_', '-', '.'; no '/' or '..'): it names the directory "
            f"eval/<task>-<variant> of the run"
        )
    return variant


def task_dir(run_dir: Path, task: str, variant: str = "") -> Path:
    return Path(run_dir) / "eval" / (f"{task}-{check_variant(variant)}" if variant else task)


def features_cache_dir(run_dir: Path) -> Path:
    """One feature cache per run, shared by k-NN, linear probe and few-shot regression, so a
    backbone runs over each dataset once."""
    return Path(run_dir) / "eval" / "features"


def record_problem(path: Path) -> str | None:
    """Why ``path`` (an ``eval/<task>[-<variant>]/metrics.json``) is not a finished record
    of its directory's evaluation, or None when it is one."""
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"not readable JSON ({exc})"
    if not isinstance(rec, dict):
        return f"a JSON {type(rec).__name__}, not an object"
    missing = [k for k in _RECORD_KEYS if k not in rec]
    if missing:
        return f"lacks key(s) {', '.join(missing)}"
    if rec["schema"] != SCHEMA:
        return f"key 'schema' = {rec['schema']!r}, expected {SCHEMA!r}"
    # provenance: the record must be the one of this directory's task and variant
    name = f"{rec['task']}-{rec['variant']}" if rec["variant"] else str(rec["task"])
    if name != Path(path).parent.name:
        return (
            f"keys 'task' = {rec['task']!r}, 'variant' = {rec['variant']!r} belong to "
            f"eval/{name}, not to eval/{Path(path).parent.name}"
        )
    metrics = rec["metrics"]
    if not isinstance(metrics, dict) or rec["primary"] not in metrics:
        return f"key 'primary' = {rec['primary']!r} is not among 'metrics'"
    bad = [k for k, v in metrics.items() if isinstance(v, bool) or not isinstance(v, (int, float))]
    if bad:
        return f"key 'metrics.{bad[0]}' = {metrics[bad[0]]!r} is not a number"
    if not math.isfinite(metrics[rec["primary"]]):  # write_metrics writes what a task gives
        return f"key 'metrics.{rec['primary']}' (the primary) = {metrics[rec['primary']]!r}"
    if "columns" in rec:  # written since the report reads its columns from the record
        return columns_problem(rec["columns"], metrics)
    return None


def is_done(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds a valid ``metrics.json``. A damaged one (a torn write, a
    hand edit, a copy from elsewhere) does not count: a warning says why, and the
    evaluation runs again and replaces it."""
    path = Path(out_dir) / "metrics.json"
    if not path.is_file():
        return False
    problem = record_problem(path)
    if problem is None:
        return True
    log.warning("'%s' is damaged (%s): not a finished evaluation; running it again", path, problem)
    return False


def task_logger(out_dir: Path, task: str) -> logging.Logger:
    """Logs to ``<out_dir>/log.txt`` (appending across resumes) and, through the
    ``folk`` logger, to stderr as the command's other messages do."""
    out_dir.mkdir(parents=True, exist_ok=True)
    task_log = logging.getLogger(f"folk.eval.{task}.{out_dir}")
    # log.txt is the evaluation's record: INFO even under --quiet, DEBUG under --verbose
    task_log.setLevel(min(logging.INFO, logging.getLogger("folk").getEffectiveLevel()))
    if not task_log.handlers:
        handler = logging.FileHandler(out_dir / "log.txt")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        task_log.addHandler(handler)
    return task_log


def write_metrics(
    out_dir: Path,
    *,
    cfg: dict,
    run_dir: Path,
    task: str,
    variant: str,
    dataset: str,
    split: str,
    metrics: dict[str, float],
    primary: str,
    seed: int,
    epochs: int,
    started: float,
) -> dict:
    """Write the one fixed schema of DESIGN.md; written last, so its presence means done.
    ``columns`` are the report columns the task declares for these metrics
    (folk.eval_tasks), so the report reads labels and order from the record itself."""
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
        "columns": [c.to_json() for c in declared_columns(task, metrics, primary)],
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
