"""Errors folk reports to users: each message names the file, key or value at fault."""


class FolkError(Exception):
    """Base class: the CLI prints these without a traceback and exits with status 2."""


class ConfigError(FolkError):
    """An invalid configuration: unknown key, wrong type, value out of range."""


class DataError(FolkError):
    """Missing, empty or malformed data."""


class RunDirError(FolkError):
    """A run directory that is missing or does not match what is asked of it."""


class NonFiniteLossError(FolkError):
    """A loss term became NaN or infinite."""
