"""``folk eval TASK --run RUN_DIR``: one evaluation of a run, driven by its config.yaml."""

from __future__ import annotations

import argparse
import shlex
import sys

from folk.cli import add_config_arguments
from folk.errors import ConfigError
from folk.eval_tasks import TASKS
from folk.evals.common import check_variant
from folk.evals.runner import run_task


def add_arguments(parser) -> None:
    parser.add_argument("task", choices=list(TASKS))
    parser.add_argument("--run", required=True, help="pre-training run directory")
    add_config_arguments(
        parser,
        required=False,
        config_help="params file whose eval section overrides the run's",
        set_help="override an eval.* key (value read as YAML)",
    )
    parser.add_argument(
        "--variant",
        default="",
        type=_variant_name,
        help="name suffix of the output directory eval/<task>-<variant> "
        "(a plain name: letters, digits, '_', '-', '.')",
    )


def _variant_name(value: str) -> str:
    """argparse type: a bad --variant is a usage error, refused before anything is read."""
    try:
        return check_variant(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args) -> int:
    run_task(
        args.run,
        args.task,
        params=args.config,
        overrides=args.overrides,
        variant=args.variant,
        holder="folk eval " + shlex.join(sys.argv[1:]),
    )
    return 0
