"""``folk pretrain --config F [--set k=v ...] --out RUN_DIR``."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
from pathlib import Path

from folk.cli import add_config_arguments
from folk.config import load_config
from folk.engine.pretrain import StopRequested
from folk.errors import SignalExit
from folk.training import pretrain
from folk.utils.io import remove_stale_temps
from folk.utils.lock import exclusive

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--out",
        required=True,
        help="run directory (resumed if it has a checkpoint, skipped if it has DONE.json)",
    )


def _is_main_process() -> bool:
    """Rank 0 as ``folk.engine.distributed.env_dist_info`` decides it, read without
    importing torch (seconds), so that a refused second writer hears it at once."""
    env = os.environ
    if "WORLD_SIZE" in env and "RANK" in env:
        return int(env["RANK"]) == 0
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        return int(env["SLURM_PROCID"]) == 0
    return True


def _run_dir_lock(run_dir: Path):
    """The run directory's lock, taken by the main process only: under torchrun or srun
    every rank runs this command on the same directory."""
    if not _is_main_process():
        return contextlib.nullcontext()
    return exclusive(run_dir, "folk pretrain " + shlex.join(sys.argv[1:]))


def run(args) -> int:
    cfg = load_config(args.config, args.overrides)  # every key checked before data is read
    run_dir = Path(args.out)
    ckpt = run_dir / "checkpoints" / "last.pt"
    with _run_dir_lock(run_dir):
        # only the lock holder may sweep: a rival's temporary files would be live ones
        remove_stale_temps(run_dir, run_dir / "checkpoints")
        try:
            done = pretrain(cfg, run_dir)
        except (StopRequested, SignalExit, KeyboardInterrupt) as stop:
            # SignalExit: the pretrainer checkpointed, then chained to the CLI's handler
            signum = getattr(stop, "signum", 2)
            where = f"checkpoint written to {ckpt}" if ckpt.is_file() else "no checkpoint yet"
            why = str(stop) or "stopped by SIGINT"
            log.error("%s; %s; run the same command again to resume", where, why)
            return 128 + signum if signum else 1
    if done:
        log.info(
            "finished %s: %s iterations, %s images/s, %s s",
            args.out,
            done["iterations"],
            done["images_per_s"],
            done["wall_time_s"],
        )
    return 0
