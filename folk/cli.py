"""The ``folk`` command line (also ``python -m folk``). Only the chosen command's module is
imported, so that the usage and ``--version`` answer at once."""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import itertools
import logging
import os
import platform
import re
import signal
import sys
import threading

from folk import __version__
from folk.errors import FAILURE, FolkError, SignalExit
from folk.eval_tasks import TASKS
from folk.utils import log as logs

# by name, not __name__: `python -m folk.cli` runs this file as __main__, outside "folk"
log = logging.getLogger("folk.cli")

# command: (module defining add_arguments(parser) and run(args), one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "pretrain": ("folk.commands.pretrain", "pre-train one variant into a run directory"),
    "eval": ("folk.commands.eval", f"evaluate a run directory ({', '.join(TASKS)})"),
    "bench": (
        "folk.commands.bench",
        "measure pre-training step throughput against a DINO baseline",
    ),
    "prepare": ("folk.commands.prepare", "prepare a dataset and write its manifest"),
    "launch": ("folk.commands.launch", "submit pre-training or fine-tuning through submitit/SLURM"),
    "report": ("folk.commands.report", "generate the paper tables and figures from run results"),
    "config": (
        "folk.commands.config",
        "validate a params file and print the resolved configuration",
    ),
    "schema": (
        "folk.commands.schema",
        "write the JSON schema of the configuration, or its Markdown reference",
    ),
}


DESCRIPTION = (
    "FOLK (frequency-guided masking with self-distillation) reproduced: each command is one "
    "step of the pipeline, from preparing the data to the paper's tables. "
    "Run 'folk COMMAND --help' for a command's options."
)


# the options every command takes, before or after its name
VERBOSITY_FLAGS = ("-q", "--quiet", "-v", "--verbose")


def _add_verbosity(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-q",
        "--quiet",
        dest="log_level",
        action="store_const",
        const=logs.QUIET,
        default=logs.DEFAULT,
        help="warnings and errors only on stderr (what the command produces stays on stdout)",
    )
    group.add_argument(
        "-v",
        "--verbose",
        dest="log_level",
        action="store_const",
        const=logs.VERBOSE,
        help="debug messages too",
    )


def _top_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="folk", description=DESCRIPTION)
    p.add_argument("--version", action="version", version=f"folk {__version__}")
    _add_verbosity(p)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, helptext) in COMMANDS.items():
        sub.add_parser(name, help=helptext)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; its outcome becomes the exit status of docs/api.md, "Exit codes"."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # `folk -q pretrain ...` is `folk pretrain -q ...`: the command's parser reads both, so
    # that `-q` here and `-v` there is the same usage error as both after the name
    lead = list(itertools.takewhile(lambda arg: arg in VERBOSITY_FLAGS, argv))
    rest = argv[len(lead) :]
    if not rest:  # a usage error like any other: the usage on stderr, status 2
        _top_parser().parse_args(lead)
        _top_parser().error("a command is required")
    if rest[0] not in COMMANDS:
        _top_parser().parse_args(argv)  # --help, --version (status 0) or a usage error (2)
        return 2
    with _signals_as_exceptions():
        return _run(rest[0], lead + rest[1:])


def _run(name: str, rest: list[str]) -> int:
    # set up before the arguments are read: a failure to import the command is logged too
    with logs.to_stderr(f"folk {name}"):
        try:
            module = importlib.import_module(COMMANDS[name][0])
            parser = argparse.ArgumentParser(prog=f"folk {name}", description=COMMANDS[name][1])
            module.add_arguments(parser)
            _add_verbosity(parser)
            args = parser.parse_args(rest)  # usage errors: argparse exits with 2
            logs.set_level(args.log_level)
            log.debug(
                "folk %s, Python %s, in %s", __version__, platform.python_version(), os.getcwd()
            )
            return int(module.run(args) or 0)
        except FolkError as exc:
            log.error("%s", exc)
            return exc.exit_status
        except OSError as exc:  # full disk, permissions, a vanished device: no traceback
            log.error("%s", os_error_text(exc))
            return FAILURE
        except SignalExit as exc:
            log.error("%s", exc)
            return 128 + exc.signum
        except KeyboardInterrupt:
            log.error("stopped by SIGINT")
            return 128 + signal.SIGINT
        except Exception:
            # the signal's exception can be swallowed by the code it interrupts (a module
            # being imported catches broad exceptions), which then fails in some other way:
            # the signal is still what stopped the command
            if _RECEIVED:
                log.error("stopped by %s", signal.Signals(_RECEIVED[-1]).name)
                return 128 + _RECEIVED[-1]
            raise


def write_product(text: str) -> None:
    """What a command produces (``folk config``'s YAML, ``folk bench``'s JSON lines): on
    stdout, not in the log, so that ``folk config ... > x.yaml`` holds the YAML alone,
    whatever ``--quiet`` says; flushed, so that a reader of the pipe gets each line when it
    is ready."""
    sys.stdout.write(text)
    sys.stdout.flush()


def os_error_text(exc: OSError) -> str:
    """One line: the file(s), then the system's words for the error."""
    what = exc.strerror or str(exc)
    if exc.errno in errno.errorcode:
        what += f" ({errno.errorcode[exc.errno]})"
    files = [f"'{f}'" for f in (exc.filename, exc.filename2) if f is not None]
    return f"{' -> '.join(files)}: {what}" if files else what


_RECEIVED: list[int] = []  # signals turned into exceptions during this main() call
_REDELIVER_S = 0.05


def _in_import(frame) -> bool:
    """Whether the interrupted code runs inside an import (importlib's bootstrap frames,
    frozen or not)."""
    while frame is not None:
        name = frame.f_code.co_filename
        if "importlib._bootstrap" in name or re.search(r"importlib[/\\]_bootstrap", name):
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def _signals_as_exceptions():
    """SIGTERM raises SignalExit (default action: die at once, skipping the clean-up that
    an error gets). A signal someone chose to ignore or handle stays as it is; the previous
    handler comes back afterwards, for callers of main() such as the tests."""

    def _raise(signum, frame):
        if signum not in _RECEIVED:
            _RECEIVED.append(signum)
        if _in_import(frame):
            # an exception raised inside an import can cross C++ frames that cannot carry
            # it (torch's extension initialisation calls back into Python), and the process
            # aborts with SIGABRT instead of cleaning up: the signal comes again shortly,
            # until it lands after the import
            timer = threading.Timer(_REDELIVER_S, os.kill, (os.getpid(), signum))
            timer.daemon = True
            timer.start()
            return
        raise SignalExit(signum)

    _RECEIVED.clear()

    previous = {}
    for sig in (signal.SIGTERM,):
        try:
            if signal.getsignal(sig) == signal.SIG_DFL:
                previous[sig] = signal.signal(sig, _raise)
        except ValueError:  # not the main thread: signals belong to the host
            pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def add_config_arguments(
    parser: argparse.ArgumentParser,
    required: bool = True,
    config_help: str = "params YAML file",
    set_help: str = "override a key (value read as YAML)",
) -> None:
    """``--config FILE`` and repeated ``--set key=value``, shared by every command; a
    command says what they change when it reads them differently (``folk eval``)."""
    parser.add_argument("--config", required=required, help=config_help)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=set_help,
    )


if __name__ == "__main__":
    sys.exit(main())
