"""One evaluation of a run, under the lock of its output directory.

Each task is a row of folk.eval_tasks and a module ``folk.evals.<task>`` with
``run(cfg, run_dir, out_dir, log) -> dict`` returning the keyword arguments of
``folk.evals.common.write_metrics`` that only the task knows (dataset, split, metrics,
primary, seed, epochs). The command line (``folk eval``) and the SLURM fine-tuning job
both go through :func:`run_task`, so a task runs the same way from either.
"""

from __future__ import annotations

import importlib
import logging
import time
from pathlib import Path

from folk.config import eval_config
from folk.errors import ConfigError
from folk.eval_tasks import TASKS
from folk.evals.common import is_done, task_dir, task_logger, write_metrics
from folk.utils.io import remove_stale_temps
from folk.utils.lock import exclusive

log = logging.getLogger(__name__)


def run_task(
    run_dir: str | Path,
    task: str,
    *,
    params: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    variant: str = "",
    holder: str | None = None,
) -> Path:
    """Evaluate ``task`` on the run in ``run_dir``; returns the path of its metrics.json.

    ``params`` and ``overrides`` change eval.* keys of the run's resolved config;
    ``holder`` names the lock's owner in the message another process would see.
    An evaluation whose metrics.json is already complete is not run again.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown evaluation task {task!r}; choose one of {list(TASKS)}")
    run_dir = Path(run_dir)
    cfg = eval_config(run_dir, params, list(overrides))
    out_dir = task_dir(run_dir, task, variant)
    with exclusive(out_dir, holder or f"folk eval {task} --run {run_dir}"):
        if is_done(out_dir):
            log.info("%s exists: nothing to do", out_dir / "metrics.json")
            return out_dir / "metrics.json"
        remove_stale_temps(out_dir)  # the lock holder's to sweep: no live writer is left
        task_log = task_logger(out_dir, task)
        started = time.time()
        module = importlib.import_module(TASKS[task].module)
        result = module.run(cfg, run_dir, out_dir, task_log)
        record = write_metrics(
            out_dir, cfg=cfg, run_dir=run_dir, task=task, variant=variant, started=started, **result
        )
        task_log.info(
            "%s %s = %.3f -> %s",
            task,
            record["primary"],
            record["metrics"][record["primary"]],
            out_dir / "metrics.json",
        )
    return out_dir / "metrics.json"


__all__ = ["run_task"]
