"""``folk eval TASK --run RUN_DIR``: one evaluation of a run, driven by its config.yaml.

Each task is a module ``folk.evals.<task>`` with
``run(cfg, run_dir, out_dir, log) -> dict`` returning the keyword arguments of
``folk.evals.common.write_metrics`` that only the task knows (dataset, split, metrics,
primary, seed, epochs).
"""
from __future__ import annotations

import importlib
import time
from pathlib import Path

from folk.evals.common import TASKS

# keys an evaluation may change in a run's configuration; the rest define the run itself
EVAL_OVERRIDABLE = ("eval.", "data.root", "data.num_workers", "experiment.run_name")


def add_arguments(parser) -> None:
    parser.add_argument("task", choices=TASKS)
    parser.add_argument("--run", required=True, help="pre-training run directory")
    parser.add_argument("--config", help="params file whose eval section overrides the run's")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override an eval.* key (value read as YAML)")
    parser.add_argument("--variant", default="", type=_variant_name,
                        help="name suffix of the output directory eval/<task>-<variant> "
                             "(a plain name: letters, digits, '_', '-', '.')")


def _variant_name(value: str) -> str:
    """argparse type: a bad --variant is a usage error, refused before anything is read."""
    import argparse

    from folk.errors import ConfigError
    from folk.evals.common import check_variant

    try:
        return check_variant(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def eval_config(run_dir: Path, params: str | None, overrides: list[str]) -> dict:
    from folk.config import (_nest, load_run_config, merge_into, parse_override, read_params,
                             resolve, validate)
    from folk.errors import ConfigError

    cfg = load_run_config(run_dir)
    if params:
        data = read_params(params)
        if "eval" in data:
            cfg = merge_into(cfg, {"eval": data["eval"]}, params)
    for item in overrides:
        key, value = parse_override(item)
        if not key.startswith(EVAL_OVERRIDABLE):
            raise ConfigError(f"--set {key}: an evaluation may only change "
                              f"{', '.join(EVAL_OVERRIDABLE)}; '{key}' belongs to the run")
        cfg = merge_into(cfg, _nest(key, value), f"--set {key}")
    validate(cfg, params or str(run_dir / "config.yaml"))
    return resolve(cfg)


def run(args) -> int:
    import shlex
    import sys

    from folk.utils.lock import exclusive

    run_dir = Path(args.run)
    cfg = eval_config(run_dir, args.config, args.overrides)
    from folk.evals.common import task_dir

    out_dir = task_dir(run_dir, args.task, args.variant)
    with exclusive(out_dir, "folk eval " + shlex.join(sys.argv[1:])):
        return _run_locked(args, cfg, run_dir, out_dir)


def _run_locked(args, cfg: dict, run_dir: Path, out_dir: Path) -> int:
    from folk.evals.common import is_done, task_logger, write_metrics
    from folk.utils.io import remove_stale_temps

    if is_done(out_dir):
        print(f"{out_dir / 'metrics.json'} exists: nothing to do")
        return 0
    remove_stale_temps(out_dir)  # the lock holder's to sweep: no live writer is left
    log = task_logger(out_dir, args.task)
    started = time.time()
    module = importlib.import_module(f"folk.evals.{args.task}")
    result = module.run(cfg, run_dir, out_dir, log)
    record = write_metrics(out_dir, cfg=cfg, run_dir=run_dir, task=args.task,
                           variant=args.variant, started=started, **result)
    log.info("%s %s = %.3f -> %s", args.task, record["primary"],
             record["metrics"][record["primary"]], out_dir / "metrics.json")
    return 0
