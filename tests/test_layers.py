"""The import graph's rules, read from the source (every import statement, in functions
too) and from what importing a module really loads."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

from conftest import REPO

PACKAGE = REPO / "folk"


def parsed(path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def imported_names(path) -> set[str]:
    """Every module ``path`` names in an import statement, anywhere in the file (and, for
    ``from m import x``, ``m.x`` too)."""
    names = set()
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def in_package(names: set[str], package: str) -> set[str]:
    return {n for n in names if n == package or n.startswith(f"{package}.")}


def imported_modules(path) -> set[str]:
    """Every folk module ``path`` names in an import statement, anywhere in the file."""
    return in_package(imported_names(path), "folk")


def library_modules() -> list:
    """Every module of the package except the commands and the entry points (``folk``,
    and ``python -m folk``, which only calls it)."""
    entry_points = {PACKAGE / "cli.py", PACKAGE / "__main__.py"}
    return [
        path
        for path in PACKAGE.rglob("*.py")
        if path.parent != PACKAGE / "commands" and path not in entry_points
    ]


def modules_loaded_by(*modules: str) -> set[str]:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "print('\\n'.join(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


def test_the_engine_imports_nothing_from_the_evaluations():
    for path in (PACKAGE / "engine").glob("*.py"):
        above = {
            m
            for m in imported_modules(path)
            if m.startswith(("folk.evals", "folk.commands", "folk.training"))
        }
        assert not above, f"{path.relative_to(REPO)} imports {sorted(above)}"
    engine = [
        f"folk.engine.{p.stem}" for p in (PACKAGE / "engine").glob("*.py") if p.stem != "__init__"
    ]
    loaded = modules_loaded_by(*engine)
    assert not {m for m in loaded if m.startswith(("folk.evals", "folk.commands"))}


def test_only_the_cli_imports_the_commands():
    for path in library_modules():
        commands = {m for m in imported_modules(path) if m.startswith("folk.commands")}
        assert not commands, f"{path.relative_to(REPO)} imports {sorted(commands)}"


def test_no_library_imports_the_entry_point():
    for path in library_modules():
        entry = in_package(imported_modules(path), "folk.cli")
        assert not entry, f"{path.relative_to(REPO)} imports {sorted(entry)}"


PARSER_METHODS = {
    "add_argument",
    "add_argument_group",
    "add_mutually_exclusive_group",
    "add_subparsers",
    "add_parser",
    "parse_args",
    "parse_known_args",
}


def parser_calls(path) -> set[str]:
    """The argparse methods ``path`` calls, by name, whatever the object."""
    return {
        node.func.attr
        for node in ast.walk(parsed(path))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in PARSER_METHODS
    }


def test_only_the_commands_parse_arguments():
    """A library is called with values: the options, and the parsers that read them, belong
    to the commands and ``folk.cli``."""
    entry = PACKAGE / "cli.py"
    assert in_package(imported_names(entry), "argparse") and parser_calls(entry)  # can fire
    for path in library_modules():
        imports = in_package(imported_names(path), "argparse")
        assert not imports, f"{path.relative_to(REPO)} imports {sorted(imports)}"
        calls = parser_calls(path)
        assert not calls, f"{path.relative_to(REPO)} builds a command line: {sorted(calls)}"


def test_the_workflow_imports_no_folk_module_that_loads_torch():
    text = (REPO / "workflow" / "rules" / "common.smk").read_text()
    modules = sorted(set(re.findall(r"^\s*(?:from|import) (folk[\w.]*)", text, re.M)))
    assert "folk.config" in modules  # the pattern finds what the workflow imports
    assert "torch" not in modules_loaded_by(*modules)


def test_the_report_reads_the_task_table_without_loading_an_evaluation():
    loaded = modules_loaded_by("folk.eval_tasks", "folk.report.collect", "folk.report.tables")
    assert "torch" not in loaded
    assert {m for m in loaded if m.startswith("folk.evals.")} <= {"folk.evals.common"}
