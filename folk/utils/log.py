"""Where the log records of the ``folk.*`` loggers go when a command runs: stderr, one line
each, ``folk COMMAND: message`` (INFO) or ``folk COMMAND: warning: message`` (the other
levels name themselves), so that a Snakemake rule's log or a SLURM output file reads the
same as a terminal. Only the entry points (``folk.cli``, the submitit jobs) install it; the
libraries log through ``logging.getLogger(__name__)`` and leave handlers alone.

What a command produces (``folk config``'s YAML, ``folk bench``'s JSON lines) is not a log
record: it goes to stdout through ``folk.cli.write_product``.
"""

from __future__ import annotations

import contextlib
import logging
import sys

ROOT = "folk"
QUIET, DEFAULT, VERBOSE = logging.WARNING, logging.INFO, logging.DEBUG


class _Stderr(logging.StreamHandler):
    """A handler on whatever ``sys.stderr`` is when a record comes: a test capturing
    stderr, or a host that redirects it after the set-up, still gets every line."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns one: never kept
        pass


class _Lines(logging.Formatter):
    def __init__(self, prog: str) -> None:
        super().__init__("%(message)s")
        self.prog = prog

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return f"{self.prog}: {level}{super().format(record)}"


@contextlib.contextmanager
def to_stderr(prog: str, level: int = DEFAULT):
    """Records of ``level`` and above from the ``folk.*`` loggers on stderr as ``prog: ...``
    lines for the ``with`` body; the ``folk`` logger is as it was afterwards (a nested
    set-up, such as a job run inside ``folk launch``, replaces the outer one meanwhile)."""
    logger = logging.getLogger(ROOT)
    saved_level, saved_handlers = logger.level, list(logger.handlers)
    handler = _Stderr()
    handler.setFormatter(_Lines(prog))
    for old in saved_handlers:
        if isinstance(old, _Stderr):
            logger.removeHandler(old)
    logger.addHandler(handler)
    set_level(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved_level)
        for old in saved_handlers:
            if old not in logger.handlers:
                logger.addHandler(old)


def set_level(level: int) -> None:
    """The threshold of the ``folk`` loggers and of the stderr lines. The handler keeps it
    too: a logger with a level of its own (an evaluation's, whose ``log.txt`` keeps INFO
    under ``--quiet``) would otherwise pass its records on to stderr."""
    logger = logging.getLogger(ROOT)
    logger.setLevel(level)
    for handler in logger.handlers:
        if isinstance(handler, _Stderr):
            handler.setLevel(level)


def chosen_level() -> int:
    """The level of the stderr lines now (DEFAULT when none are set up), for a job that
    runs elsewhere to log as the command that submitted it."""
    for handler in logging.getLogger(ROOT).handlers:
        if isinstance(handler, _Stderr):
            return handler.level
    return DEFAULT
