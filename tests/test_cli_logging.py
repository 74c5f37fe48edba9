"""The commands' messages are log records on stderr, one ``folk COMMAND: ...`` line each;
``-q`` keeps warnings and errors, ``-v`` adds debug lines, before or after the command's
name; what a command produces stays alone on stdout whatever the level."""

from __future__ import annotations

import ast
import logging
import subprocess
import sys

import pytest
import yaml
from PIL import Image

from conftest import REPO

PARAMS = str(REPO / "params" / "test_tiny.yaml")


def folk(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "folk", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_schema_says_what_it_wrote_unless_quiet(tmp_path):
    out = tmp_path / "schema.yaml"
    done = folk("schema", "--out", str(out))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", f"folk schema: wrote {out}\n")
    for argv in (["-q", "schema", "--out", str(out)], ["schema", "--quiet", "--out", str(out)]):
        out.unlink()
        done = folk(*argv)
        assert (done.returncode, done.stdout, done.stderr) == (0, "", ""), argv
        assert out.is_file(), argv


def test_the_product_on_stdout_is_the_same_at_every_level():
    argv = ["config", "--config", PARAMS, "--set", "experiment.seed=3"]
    default = folk(*argv)
    assert default.returncode == 0 and default.stderr == ""  # config has nothing to say
    assert yaml.safe_load(default.stdout)["experiment"]["seed"] == 3
    for extra in (["-q"], ["--quiet"], ["-v"], ["--verbose"]):
        for run in (folk(*extra, *argv), folk(*argv, *extra)):
            assert (run.returncode, run.stdout) == (0, default.stdout), extra
    got = folk("-q", *argv, "--get", "experiment.seed")
    assert (got.returncode, got.stdout, got.stderr) == (0, "3\n", "")


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_adds_debug_lines_on_stderr(where):
    argv = ["config", "--config", PARAMS, "--set", "experiment.seed=3"]
    done = folk("-v", *argv) if where == "before" else folk(*argv, "-v")
    lines = done.stderr.splitlines()
    assert done.returncode == 0 and lines
    assert all(line.startswith("folk config: debug: ") for line in lines), lines
    assert "folk config: debug: --set experiment.seed = 3" in lines


@pytest.mark.parametrize("quiet", [[], ["-q"]])
def test_an_error_is_one_line_on_stderr_even_under_quiet(quiet):
    done = folk(*quiet, "config", "--config", PARAMS, "--set", "nope.x=1")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "folk config: error: --set nope.x: unknown key 'nope'\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["-q", "-v", "config", "--config", PARAMS],
        ["-q", "config", "--config", PARAMS, "-v"],
        ["config", "--config", PARAMS, "--quiet", "--verbose"],
        ["-v", "-q"],
    ],
)
def test_quiet_and_verbose_together_is_a_usage_error(argv):
    done = folk(*argv)
    assert (done.returncode, done.stdout) == (2, "")
    assert "not allowed with argument" in done.stderr


def test_prepare_logs_its_steps_and_quiet_silences_them(tmp_path):
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            folder = tmp_path / "src" / split / name
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (60 * i, 0, 0)).save(folder / f"{i}.png")
    params = tmp_path / "p.yaml"
    params.write_text(
        f"data:\n  dataset: imagefolder\n  root: {tmp_path / 'prep'}\n"
        f"  source: {tmp_path / 'src'}\n  num_classes: 2\n"
    )
    first = folk("prepare", "imagefolder", "--config", str(params), cwd=tmp_path)
    assert (first.returncode, first.stdout) == (0, "")
    lines = first.stderr.splitlines()
    assert lines and all(line.startswith("folk prepare: ") for line in lines), lines
    assert any(f"wrote '{tmp_path / 'prep' / 'manifest.json'}'" in line for line in lines)
    again = folk("prepare", "-q", "imagefolder", "--config", str(params), cwd=tmp_path)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")


def test_every_command_takes_quiet_and_verbose_both_sides_of_its_name(capsys):
    from folk.cli import COMMANDS, main

    for name in COMMANDS:
        for argv in (["-q", name, "--help"], [name, "-v", "--help"]):
            with pytest.raises(SystemExit) as stop:
                main(argv)
            assert stop.value.code == 0, argv
            usage = capsys.readouterr().out
            assert "-q, --quiet" in usage and "-v, --verbose" in usage, argv


def test_an_evaluation_log_keeps_info_under_quiet(tmp_path, capsys):
    """Its log.txt is the evaluation's record; --quiet only shortens stderr."""
    from folk.evals.common import task_logger
    from folk.utils import log as logs

    for level, shown in ((logs.QUIET, ""), (logs.DEFAULT, "folk eval: step two\n")):
        with logs.to_stderr("folk eval", level):
            task_logger(tmp_path / str(level), "knn").info("step two")
        assert capsys.readouterr().err == shown
        assert "INFO step two" in (tmp_path / str(level) / "log.txt").read_text()


def test_a_command_leaves_the_logging_of_its_host_as_it_was(capsys):
    """main() called from a program (the tests): no handler stays behind."""
    from folk.cli import main

    before = logging.getLogger("folk").handlers[:], logging.getLogger("folk").level
    assert main(["-v", "config", "--config", PARAMS]) == 0
    assert (logging.getLogger("folk").handlers, logging.getLogger("folk").level) == before
    capsys.readouterr()


# ------------------------------------------------------------------ no stray output

# the only code that touches sys.stdout or sys.stderr, and why
STREAM_USERS = {
    ("cli.py", "write_product"): "what a command produces goes to stdout, not to the log",
    ("utils/log.py", "_Stderr.stream"): "the handler that writes the log records as lines",
    ("utils/progress.py", "progress"): "tqdm draws the live bar on the terminal itself",
}


def stream_uses(tree: ast.Module):
    """(enclosing function's qualified name, what) for each call of print and each use of
    sys.stdout / sys.stderr in ``tree``."""
    found = []

    def visit(node, scope):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            scope = f"{scope}.{node.name}" if scope else node.name
        if isinstance(node, ast.Name) and node.id == "print":
            found.append((scope, "print"))
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in ("stdout", "stderr", "__stdout__", "__stderr__")
            and isinstance(node.value, ast.Name)
            and node.value.id == "sys"
        ):
            found.append((scope, f"sys.{node.attr}"))
        elif isinstance(node, ast.ImportFrom) and node.module == "sys":
            found.extend((scope, f"sys.{a.name}") for a in node.names if "std" in a.name)
        for child in ast.iter_child_nodes(node):
            visit(child, scope)

    visit(tree, "")
    return found


def test_the_finder_sees_print_and_the_streams():
    tree = ast.parse(
        "import sys\nfrom sys import stderr\n"
        "def f():\n    print('x')\n"
        "class C:\n    def g(self):\n        sys.stdout.write('y')\n        say = print\n"
    )
    assert stream_uses(tree) == [
        ("", "sys.stderr"),
        ("f", "print"),
        ("C.g", "sys.stdout"),
        ("C.g", "print"),
    ]


def test_no_module_prints_or_writes_to_the_streams_but_the_named_ones():
    package = REPO / "folk"
    seen, stray = set(), []
    for path in sorted(package.rglob("*.py")):
        name = path.relative_to(package).as_posix()
        for scope, what in stream_uses(ast.parse(path.read_text(), filename=str(path))):
            if (name, scope) in STREAM_USERS and what != "print":
                seen.add((name, scope))
            else:
                stray.append(f"folk/{name}: {scope or '<module>'}: {what}")
    assert not stray, f"log through logging.getLogger(__name__) or folk.cli.write_product: {stray}"
    assert seen == set(STREAM_USERS)  # each exception is still needed
