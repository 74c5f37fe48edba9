"""``folk schema``: write (or check) the JSON schema that Snakemake validates params with."""

from __future__ import annotations

import logging
from pathlib import Path

from folk.config import json_schema_yaml
from folk.errors import ConfigError

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="workflow/schemas/config.schema.yaml")
    parser.add_argument(
        "--check", action="store_true", help="fail if the file differs from the generated schema"
    )


def run(args) -> int:
    text = json_schema_yaml()
    out = Path(args.out)
    if args.check:
        if not out.is_file() or out.read_text() != text:
            raise ConfigError(f"{out} is out of date: run `folk schema --out {out}`")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    log.info("wrote %s", out)
    return 0
