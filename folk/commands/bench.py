"""``folk bench``: throughput of pre-training steps against a DINO baseline
(``folk.benchmark.step``), or with ``--data`` the input path (``folk.benchmark.input_path``).
Prints one JSON line per measurement on stdout, a human account in the log (stderr)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from folk.benchmark.input_path import measure_input_path
from folk.benchmark.step import BASELINE, step_record
from folk.cli import add_config_arguments, write_product
from folk.config import load_config
from folk.errors import ConfigError
from folk.utils.io import append_jsonl

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    add_config_arguments(parser, required=False)
    parser.add_argument("--variants", default="folk", help="comma-separated variant names")
    parser.add_argument(
        "--archs",
        default="",
        help="comma-separated timm names (default: the config's model.arch)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images per step (default 128; with --data the config's pretrain.batch_size)",
    )
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--compile", action="store_true", help="torch.compile the networks")
    parser.add_argument("--no-baseline", action="store_true", help="skip the DINO baseline")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=0.0,
        help="device peak, to report MFU (e.g. 989 for H100 dense bf16)",
    )
    parser.add_argument("--out", help="append the JSON lines to this file too")
    data = parser.add_argument_group("the input path (--data; folk/benchmark/input_path.py)")
    data.add_argument(
        "--data",
        action="store_true",
        help="measure the loader on the config's dataset against DINO's "
        "reference augmentation, the step, and the two together",
    )
    data.add_argument(
        "--rounds",
        type=int,
        default=12,
        help="interleaved rounds of the loader pipelines (median taken)",
    )
    data.add_argument("--images", type=int, default=32, help="images per loader pipeline and round")
    data.add_argument(
        "--iterations", type=int, default=10, help="timed iterations of the whole path (0: skip it)"
    )


def run(args) -> int:
    base_overrides = list(args.overrides)
    archs = [a for a in args.archs.split(",") if a] or [None]
    variants = [v for v in args.variants.split(",") if v]
    if args.data:
        return _run_input_path(args, variants, archs)
    batch = 128 if args.batch_size is None else args.batch_size
    jobs = [(v, a, False) for a in archs for v in variants]
    if not args.no_baseline:
        jobs = [(BASELINE, a, True) for a in archs] + jobs
    # validate every configuration before the first (slow) measurement
    configs = []
    for variant, arch, baseline in jobs:
        overrides = base_overrides + [f"pretrain.variant={variant}"]
        if arch:
            overrides.append(f"model.arch={arch}")
        configs.append((variant, baseline, load_config(args.config, overrides)))
    out = Path(args.out) if args.out else None
    for variant, baseline, cfg in configs:
        record = step_record(
            cfg,
            variant,
            baseline,
            batch=batch,
            steps=args.steps,
            warmup=args.warmup,
            compile_=args.compile,
            peak_tflops=args.peak_tflops,
        )
        _emit(record, out)
        log.info(
            "%22s %s: %.1f img/s, %.1f ms/step, %.2f TFLOP/s, filter %.2f %% of the step",
            variant,
            record["arch"],
            record["images_per_s"],
            record["step_time_ms"],
            record["tflops"],
            100 * record["filter_fraction"],
        )
    return 0


def _run_input_path(args, variants: list, archs: list) -> int:
    if len(variants) != 1 or len(archs) != 1:
        raise ConfigError(
            f"--data measures one variant on one backbone (the loader does not "
            f"depend on them), got --variants {args.variants!r} --archs "
            f"{args.archs!r}"
        )
    overrides = list(args.overrides) + [f"pretrain.variant={variants[0]}"]
    if archs[0]:
        overrides.append(f"model.arch={archs[0]}")
    cfg = load_config(args.config, overrides)
    batch = args.batch_size or cfg["pretrain"]["batch_size"]
    for flag, value, least in (
        ("--rounds", args.rounds, 1),
        ("--images", args.images, 1),
        ("--iterations", args.iterations, 0),
        ("--steps", args.steps, 1),
        ("--warmup", args.warmup, 0),
        ("--batch-size", batch, 1),
    ):
        if value < least:
            raise ConfigError(f"{flag} must be >= {least}, got {value}")
    out = Path(args.out) if args.out else None
    measure_input_path(
        cfg,
        batch=batch,
        rounds=args.rounds,
        images=args.images,
        steps=args.steps,
        warmup=args.warmup,
        iterations=args.iterations,
        compile_=args.compile,
        emit=lambda record: _emit(record, out),
        say=log.info,
    )
    return 0


def _emit(record: dict, out: Path | None) -> None:
    """A JSON line on stdout, appended to ``--out`` too when given."""
    write_product(json.dumps(record) + "\n")
    if out:
        append_jsonl(out, record)
