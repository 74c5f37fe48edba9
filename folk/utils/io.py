"""Atomic file writes: a reader never sees a half-written file, a crash never loses the old one."""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("folk.io")


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    _atomic(path, lambda f: torch.save(obj, f))


def append_jsonl(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_jsonl_lines(path: Path) -> tuple[list[dict], list[tuple[int, str]]]:
    """``(records, damaged)`` of a JSON-lines file: every line that parses as a JSON object,
    and ``(line number, text)`` of every other non-blank line (a writer killed mid-line, a
    damaged disk block), so that a caller rewriting the file can keep them."""
    records, damaged = [], []
    if not Path(path).exists():
        return records, damaged
    with open(path, "rb") as f:  # split at b"\n" only: a damaged line is kept byte for byte
        for number, line in enumerate(f, 1):
            text = line.rstrip(b"\n").decode("utf-8", "surrogateescape")
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError:
                record = None
            if isinstance(record, dict):
                records.append(record)
            else:
                damaged.append((number, text))
    return records, damaged


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSON-lines file. A damaged line is skipped with a warning naming the file
    and line, and reading goes on: the records after it are as valid as those before."""
    records, damaged = read_jsonl_lines(path)
    for number, text in damaged:
        log.warning("%s line %d is not a JSON record, skipped: %.80r", path, number, text)
    return records
