"""One writer per directory: an exclusive ``flock`` on ``<dir>/folk.lock``, held for the
life of the process.

The kernel drops a flock when its holder dies, however it dies (SIGKILL, OOM killer, node
reboot), so a lock left behind by a killed run never blocks the run that resumes it; the
file's content (pid, host, start time) only serves the message of whoever is refused.
flock works on local file systems and on NFSv4 and Lustre mounted with ``flock``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
from pathlib import Path

from folk.errors import RunDirBusyError
from folk.utils.io import named_os_error
from folk.utils.provenance import now_iso

log = logging.getLogger(__name__)

LOCK_NAME = "folk.lock"
# errors of file systems that do not implement flock
_NO_FLOCK = (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL)


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "another process (it has not written its name yet)"
    return (
        f"pid {info.get('pid')} on host {info.get('host')}, started "
        f"{info.get('started')}, running `{info.get('command')}`"
    )


@contextlib.contextmanager
def exclusive(directory: str | Path, command: str):
    """Hold ``<directory>/folk.lock`` for the ``with`` body; RunDirBusyError naming the
    holder when another process has it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    # O_CREAT without O_TRUNC: the holder's record must survive a refused rival's open
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise named_os_error(path, exc) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirBusyError(
                f"'{directory}' is in use: '{path}' is locked by {_holder(path)}; wait for it "
                f"to end (or stop it), then run the same command again"
            ) from None
        except OSError as exc:
            if exc.errno not in _NO_FLOCK:
                raise named_os_error(path, exc) from exc
            # refusing to run at all there would be worse than running unguarded
            log.warning(
                "cannot lock '%s' (%s; Lustre needs the 'flock' mount option): nothing stops "
                "a second writer",
                path,
                exc.strerror,
            )
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": now_iso(),
            "command": command,
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        except OSError as exc:  # a full disk, say: the system's error names no file
            raise named_os_error(path, exc) from exc
        yield path
    finally:
        os.close(fd)  # releases the flock; the file stays, harmless to the next holder
