"""Errors folk reports to users: each message names the file, key or value at fault.

Each class carries the exit status the CLI ends with (docs/api.md, "Exit codes"): 2 when the
command or its configuration is wrong (running it again unchanged fails the same way), 1
when something went wrong while doing the work (data, numerics, the system).
"""

import signal

USAGE = 2
FAILURE = 1


class FolkError(Exception):
    """Base class: the CLI prints these without a traceback and exits with ``exit_status``."""

    exit_status = USAGE


class ConfigError(FolkError):
    """An invalid configuration: unknown key, wrong type, value out of range.

    ``key`` is the dotted configuration key at fault (``data.mean``, never ``data.mean[0]``)
    and ``source`` the file or ``--set`` override the message names, each None where there is
    none: callers act on them (validation names the override that set the key) without
    parsing the message."""

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None):
        super().__init__(message)
        self.key = key
        self.source = source


class DataError(FolkError):
    """Missing, empty or malformed data."""

    exit_status = FAILURE


class RunDirError(FolkError):
    """A run directory that is missing or does not match what is asked of it."""


class DamagedFileError(FolkError):
    """A file folk wrote (checkpoint, weights, cache) that is truncated or is not what its
    name says; the message names it and what to do."""

    exit_status = FAILURE


class RunDirBusyError(RunDirError):
    """Another process holds the run (or evaluation) directory; waiting may cure it."""

    exit_status = FAILURE


class NonFiniteLossError(FolkError):
    """A loss term became NaN or infinite."""

    exit_status = FAILURE


class SignalExit(BaseException):
    """A termination signal raised as an exception, so that clean-up (temporary files,
    locks, logs) runs as it does for an error; the CLI exits with 128 + the signal number.
    A BaseException, like KeyboardInterrupt, so that ``except Exception`` does not eat it."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        try:
            name = signal.Signals(self.signum).name
        except ValueError:
            name = f"signal {self.signum}"
        super().__init__(f"stopped by {name}")
