"""``folk prepare DATASET --config F [--set ..]``: a dataset and its manifest, the few-shot
label lists, or the JPEG photographs, as ``folk.data.prepare`` makes them."""

from __future__ import annotations

from folk.cli import add_config_arguments
from folk.config import load_config
from folk.data.prepare import TARGETS, prepare
from folk.errors import ConfigError


def add_arguments(parser) -> None:
    parser.add_argument("dataset", choices=TARGETS, help="what to prepare")
    add_config_arguments(parser)
    parser.add_argument(
        "--full",
        action="store_true",
        help="image folders: decode every image (default: a seeded sample)",
    )
    parser.add_argument(
        "--sample-per-class",
        type=int,
        default=10,
        metavar="N",
        help="image folders: images decoded per class without --full (default 10)",
    )
    parser.add_argument(
        "--force", action="store_true", help="redo the work even when the manifest matches the data"
    )
    parser.add_argument(
        "--count",
        type=int,
        default=200,
        metavar="N",
        help="photos: training photographs to write (default 200; folk/data/photos.py)",
    )


def run(args) -> int:
    cfg = load_config(args.config, args.overrides)
    if args.sample_per_class < 1:
        raise ConfigError(f"--sample-per-class must be >= 1, got {args.sample_per_class}")
    if args.dataset == "photos" and args.count < 1:
        raise ConfigError(f"--count must be >= 1, got {args.count}")
    prepare(
        cfg,
        args.dataset,
        full=args.full,
        sample_per_class=args.sample_per_class,
        force=args.force,
        count=args.count,
    )
    return 0
