"""Progress in logs: whole lines, never a carriage return, when stderr is not a terminal;
lines of the command's log, which --quiet silences."""

from __future__ import annotations

import sys

import pytest
from tqdm import tqdm

from folk.utils import log as logs
from folk.utils import progress as P

PROG = "folk test"
PREFIX = f"{PROG}: "


@pytest.fixture
def command_log():
    """The log set up as a command's: INFO records as stderr lines."""
    with logs.to_stderr(PROG):
        yield


def test_a_log_gets_whole_lines_and_a_last_one(capsys, monkeypatch, command_log):
    monkeypatch.setattr(P, "LINE_INTERVAL_S", 0.0)  # a line at every update
    seen = []
    bar = P.progress(range(3), desc="features train", unit="batch")
    for i in bar:
        seen.append(i)
        bar.set_postfix(loss="0.5000")
    err = capsys.readouterr().err
    assert seen == [0, 1, 2] and "\r" not in err
    lines = err.splitlines()
    assert all(line.startswith(PREFIX) for line in lines)  # like the command's other lines
    assert [line[len(PREFIX) :].split(",")[0] for line in lines] == [
        "features train: 1/3 batch",
        "features train: 2/3 batch",
        "features train: 3/3 batch",
        "features train: 3/3 batch",
    ]
    assert lines[-1].endswith("(done), loss=0.5000")


def test_lines_come_at_the_interval_only(capsys, command_log):
    bar = P.progress(total=1000, initial=10, desc="epoch 1/2")
    for _ in range(990):
        bar.update(1)
    bar.close()
    bar.close()  # once
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{PREFIX}epoch 1/2: 1000/1000 it")


def test_a_silent_rank_writes_nothing(capsys, command_log):
    bar = P.progress(total=5, desc="epoch", enabled=False)
    bar.update(5)
    bar.close()
    assert capsys.readouterr().err == ""


def test_a_terminal_gets_the_live_bar(monkeypatch, command_log):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    bar = P.progress(range(2), desc="x")
    assert isinstance(bar, tqdm)
    bar.close()


@pytest.mark.parametrize("terminal", [False, True])
def test_quiet_shows_no_progress(capsys, monkeypatch, command_log, terminal):
    monkeypatch.setattr(P, "LINE_INTERVAL_S", 0.0)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal, raising=False)
    logs.set_level(logs.QUIET)
    bar = P.progress(range(3), desc="epoch")
    assert not isinstance(bar, tqdm)
    assert list(bar) == [0, 1, 2]
    assert capsys.readouterr().err == ""
