"""metrics.jsonl on resume: the records after the checkpoint are redone, so they go; a line
that does not parse is never dropped: it may be the only copy of a record.

Policy for damaged lines: they are moved, verbatim and in their order, to
``<file>.damaged`` beside the file (appended to, never rewritten), and a warning names both
files and the line numbers. Keeping them in place instead would make every later reader warn
again and would put a torn line in the middle of the records the resumed run appends.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from folk.utils.io import atomic_write_text, read_jsonl_lines

log = logging.getLogger(__name__)


def damaged_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".damaged")


def rewind_records(path: Path, iteration: int) -> None:
    """Rewrite ``path`` keeping the records of iterations <= ``iteration``; damaged lines
    go to :func:`damaged_path` first, so that a crash in between duplicates, never loses."""
    records, damaged = read_jsonl_lines(path)
    if damaged:
        aside = damaged_path(path)
        with open(aside, "ab") as f:
            for _, text in damaged:
                f.write(text.encode("utf-8", "surrogateescape") + b"\n")
            f.flush()
            os.fsync(f.fileno())
        numbers = ", ".join(str(n) for n, _ in damaged)
        log.warning(
            "%s line%s %s: not JSON records; moved verbatim to %s",
            path,
            "s" if len(damaged) > 1 else "",
            numbers,
            aside,
        )
    kept = [r for r in records if r.get("iteration", 0) <= iteration]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
