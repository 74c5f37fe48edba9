"""``folk config``: validate a params file, print the resolved configuration."""

from __future__ import annotations

import yaml

from folk.cli import add_config_arguments, write_product
from folk.config import _get, load_config


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--get", help="print only this dotted key")


def run(args) -> int:
    cfg = load_config(args.config, args.overrides)
    if args.get:
        value = _get(cfg, args.get)
        text = value if not isinstance(value, (dict, list)) else yaml.safe_dump(value).strip()
        write_product(f"{text}\n")
    else:
        write_product(yaml.safe_dump(cfg, sort_keys=False))
    return 0
