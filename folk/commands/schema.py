"""``folk schema``: write (or check) the JSON schema that Snakemake validates params with, or,
with ``--markdown``, the configuration reference made from it (docs/configuration.md)."""

from __future__ import annotations

import logging
from pathlib import Path

from folk.cli import write_product
from folk.config import json_schema_yaml, markdown_reference_text
from folk.errors import ConfigError

JSON_SCHEMA_PATH = "workflow/schemas/config.schema.yaml"
log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument(
        "--out",
        help=f"file to write (default: {JSON_SCHEMA_PATH}; with --markdown, standard output)",
    )
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="write the configuration reference in Markdown instead of the JSON schema",
    )
    parser.add_argument(
        "--check", action="store_true", help="fail if the file differs from the generated text"
    )


def run(args) -> int:
    text = markdown_reference_text() if args.markdown else json_schema_yaml()
    out = args.out or (None if args.markdown else JSON_SCHEMA_PATH)
    if out is None:
        if args.check:
            raise ConfigError("--check needs --out: the file to compare")
        write_product(text)
        return 0
    out = Path(out)
    if args.check:
        if not out.is_file() or out.read_text() != text:
            again = " --markdown" if args.markdown else ""
            raise ConfigError(f"{out} is out of date: run `folk schema{again} --out {out}`")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    log.info("wrote %s", out)
    return 0
