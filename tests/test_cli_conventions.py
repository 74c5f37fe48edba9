"""The command line's conventions: ``python -m folk``, ``--version``, a help that is a
sentence, and a bare ``folk`` that is a usage error."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO


def folk(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "folk", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_python_m_folk_prints_the_version_of_the_package():
    text = (REPO / "pyproject.toml").read_text()
    declared = re.search(r'^version = "([^"]+)"', text, re.M).group(1)  # [project]'s
    out = folk("--version")
    assert (out.returncode, out.stdout.strip()) == (0, f"folk {declared}")


def test_a_bare_folk_is_a_usage_error():
    out = folk()
    assert out.returncode == 2
    assert out.stderr.startswith("usage: folk") and "a command is required" in out.stderr
    assert out.stdout == ""


def test_the_help_is_sentences_naming_every_command():
    out = folk("--help")
    assert out.returncode == 0
    description = " ".join(out.stdout.split("\n\n")[1].split())
    assert description.endswith(".") and description[0].isupper()
    assert "``" not in out.stdout  # no markup of the docstrings leaks into the terminal
    for command in ("pretrain", "eval", "bench", "prepare", "launch", "report", "config", "schema"):
        assert f"    {command} " in out.stdout


def test_every_command_reading_a_config_takes_the_same_config_and_set():
    import argparse
    import importlib

    from folk.cli import COMMANDS

    for name in ("pretrain", "eval", "bench", "prepare", "launch", "config"):
        parser = argparse.ArgumentParser()
        importlib.import_module(COMMANDS[name][0]).add_arguments(parser)
        options = {a.dest: a for a in parser._actions}
        assert options["config"].option_strings == ["--config"], name
        overrides = options["overrides"]
        assert (overrides.option_strings, overrides.metavar) == (["--set"], "KEY=VALUE"), name
        args = parser.parse_args(
            (["knn", "--run", "r"] if name == "eval" else [])
            + (["fashion_mnist"] if name == "prepare" else [])
            + (["--out", "o"] if name in ("pretrain", "launch") else [])
            + ["--config", "c.yaml", "--set", "a.b=1", "--set", "c=2"]
        )
        assert (args.config, args.overrides) == ("c.yaml", ["a.b=1", "c=2"]), name
