"""``folk pretrain --config F [--set k=v ...] --out RUN_DIR``."""
from __future__ import annotations

import sys

from folk.cli import add_config_arguments


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", required=True, help="run directory (resumed if it has a "
                                                     "checkpoint, skipped if it has DONE.json)")


def run(args) -> int:
    from folk.config import load_config

    cfg = load_config(args.config, args.overrides)  # every key checked before data is read
    from folk.engine.pretrain import StopRequested, pretrain

    try:
        done = pretrain(cfg, args.out)
    except StopRequested as stop:
        print(f"folk pretrain: checkpoint written to {args.out}/checkpoints/last.pt; "
              f"{stop}; run the same command again to resume", file=sys.stderr)
        return 128 + stop.signum if stop.signum else 1
    if done:
        print(f"folk pretrain: finished {args.out}: {done['iterations']} iterations, "
              f"{done['images_per_s']} images/s, {done['wall_time_s']} s", file=sys.stderr)
    return 0
