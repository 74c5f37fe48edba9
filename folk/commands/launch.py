"""``folk launch --config F [--set k=v ...] --out RUN_DIR [--wait] [--task pretrain|finetune]``

Pre-training (or fine-tuning of a finished run) through submitit: ``launch.executor``
none (this process), local (submitit's local executor) or slurm (sbatch). Options come
from the ``launch`` and ``slurm`` sections; docs/slurm.md is the user guide.
"""

from __future__ import annotations

import json
import logging

from folk.cli import add_config_arguments
from folk.config import load_config
from folk.engine.pretrain import StopRequested
from folk.launch.submit import launch

log = logging.getLogger(__name__)

LAUNCH_KEYS = ("launch.", "slurm.", "experiment.name", "experiment.run_name")


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--out",
        required=True,
        help="run directory (pretrain: trained or resumed there; finetune: "
        "the finished pre-training run to fine-tune)",
    )
    parser.add_argument("--task", choices=("pretrain", "finetune"), default="pretrain")
    parser.add_argument(
        "--wait",
        action="store_true",
        help="block until the job ends; fail with its log tail if it fails",
    )


def _split_finetune_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """Fine-tuning: launch/slurm keys choose the job, the rest (eval.*) go to `folk eval`."""
    launch, rest = [], []
    for item in overrides:
        (launch if item.split("=", 1)[0].strip().startswith(LAUNCH_KEYS) else rest).append(item)
    return launch, rest


def run(args) -> int:
    if args.task == "pretrain":
        cfg = load_config(args.config, args.overrides)
        eval_sets: list[str] = []
    else:
        launch_sets, eval_sets = _split_finetune_overrides(args.overrides)
        cfg = load_config(args.config, launch_sets)
    try:
        outcome = launch(
            cfg,
            args.out,
            task=args.task,
            wait=args.wait,
            params=args.config,
            eval_overrides=eval_sets,
        )
    except StopRequested as stop:  # launch.executor=none: this process was signalled
        log.error(
            "checkpoint written to %s; %s; run the same command again to resume", args.out, stop
        )
        return 128 + stop.signum if stop.signum else 1
    if outcome["status"] == "finished":
        result = outcome["result"] or {}
        brief = {
            k: result[k]
            for k in ("iterations", "images_per_s", "wall_time_s", "metrics")
            if k in result
        }
        log.info("%s of %s finished %s", args.task, args.out, json.dumps(brief))
    return 0
