"""Atomic file writes: a reader never sees a half-written file, a crash never loses the old one.

A failed write raises OSError naming the file being written (the system's own error often
names none, or only the temporary file) and leaves no temporary file behind; files left by
a killed writer follow ``TEMP_PATTERN`` so that the next holder of the directory removes
them (``remove_stale_temps``).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from folk.errors import DamagedFileError

log = logging.getLogger(__name__)

# ".<name>.<8 random characters of tempfile>.tmp"
TEMP_PATTERN = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def _umask() -> int:
    # reading the umask means setting it: a file another thread creates in between gets
    # the common default 022, never something stricter or looser than usual
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable: without it a crash can bring back the old name's target."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # a file system that cannot open directories: nothing to sync
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        # some network file systems cannot sync a directory; any other error is real
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise named_os_error(directory, exc) from exc
    finally:
        os.close(fd)


def _os_error_in(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc``: torch, for one, reports a failed write as a RuntimeError
    whose context is the OSError."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def named_os_error(path: Path, exc: BaseException) -> BaseException:
    """``exc`` as an OSError naming ``path`` when an OSError lies behind it; else ``exc``
    (a signal or Ctrl-C stays what it is)."""
    os_error = _os_error_in(exc) if isinstance(exc, Exception) else None
    if os_error is None:
        return exc
    # OSError(errno, ...) gives back the matching subclass (PermissionError, ...)
    return OSError(os_error.errno, os_error.strerror or os.strerror(os_error.errno), str(path))


def _atomic(path: Path, write) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise named_os_error(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            # mkstemp makes 0600 files; a run's files are for the group too, as umask says
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        named = named_os_error(path, exc)
        if named is exc:
            raise
        raise named from exc
    _fsync_dir(path.parent)


def remove_stale_temps(*directories: Path) -> list[Path]:
    """Delete the temporary files a killed writer left in ``directories`` (not below).
    Only for the holder of the directory's lock: another writer's files would be live."""
    removed = []
    for directory in directories:
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            continue
        for entry in entries:
            if TEMP_PATTERN.match(entry.name) and entry.is_file(follow_symlinks=False):
                try:
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
                except FileNotFoundError:
                    pass
    return removed


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch  # noqa: PLC0415  torch-free: folk.config imports this module

    _atomic(path, lambda f: torch.save(obj, f))


def atomic_save_safetensors(tensors: dict, path: Path, metadata: dict[str, str]) -> None:
    """``tensors`` (a state dict) as a safetensors file: no code runs when it is loaded, and
    other frameworks read it; ``metadata`` goes into its header."""
    from safetensors.torch import save  # noqa: PLC0415  torch-free: folk.config imports this module

    data = save({k: v.detach().contiguous() for k, v in tensors.items()}, metadata=metadata)
    atomic_write_bytes(path, data)


def load_torch_file(path: Path, remedy: str, required: tuple[str, ...] = ()) -> Any:
    """``torch.load`` (CPU, weights only) of a file folk wrote, or DamagedFileError naming
    ``path``, what is wrong and ``remedy`` (what the user should do). A truncated file and one
    of another program fail in many ways inside torch (RuntimeError from the zip reader,
    UnpicklingError for objects weights-only refuses, EOFError, ...); all are reported
    alike. ``required``: top-level keys the object must have, for a file that loads but is
    not the kind expected. A system error (permission, I/O) stays an OSError naming the file."""
    import torch  # noqa: PLC0415  torch-free: folk.config imports this module

    path = Path(path)
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise named_os_error(path, exc) from None
    try:
        with f:
            obj = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as exc:
        # past open(), torch's own OSErrors (EINVAL from a seek past a truncated end) mean
        # damage; only a failing disk is a system error
        behind = _os_error_in(exc)
        if behind is not None and behind.errno == errno.EIO:
            raise named_os_error(path, exc) from None
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise DamagedFileError(
            f"{path}: unreadable, truncated or not a torch file "
            f"({type(exc).__name__}: {detail}); {remedy}"
        ) from None
    if required:
        missing = [k for k in required if not isinstance(obj, dict) or k not in obj]
        if missing:
            what = (
                f"lacks key(s) {missing}"
                if isinstance(obj, dict)
                else f"holds a {type(obj).__name__}, not a mapping"
            )
            raise DamagedFileError(f"{path}: {what}: not the file folk writes there; {remedy}")
    return obj


def append_jsonl(path: Path, record: dict) -> None:
    """One record on a line of its own: after a writer killed mid-line the file ends without
    a newline, and a record glued onto that torn line would be lost with it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+b") as f:  # appends go to the end whatever was read
            end, torn = f.seek(0, os.SEEK_END), False
            if end:
                f.seek(end - 1)
                torn = f.read(1) != b"\n"
            f.write((b"\n" if torn else b"") + (json.dumps(record) + "\n").encode())
    except OSError as exc:  # a buffered write's error names no file
        raise named_os_error(path, exc) from exc


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
