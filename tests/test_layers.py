"""The import graph's rules, read from the source (every import statement, in functions
too) and from what importing a module really loads."""
from __future__ import annotations

import ast
import re
import subprocess
import sys

from conftest import REPO

PACKAGE = REPO / "folk"


def imported_modules(path) -> set[str]:
    """Every folk module ``path`` names in an import statement, anywhere in the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n == "folk" or n.startswith("folk.")}


def modules_loaded_by(*modules: str) -> set[str]:
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + "print('\\n'.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    return set(out.split())


def test_the_engine_imports_nothing_from_the_evaluations():
    for path in (PACKAGE / "engine").glob("*.py"):
        above = {m for m in imported_modules(path)
                 if m.startswith(("folk.evals", "folk.commands", "folk.training"))}
        assert not above, f"{path.relative_to(REPO)} imports {sorted(above)}"
    engine = [f"folk.engine.{p.stem}" for p in (PACKAGE / "engine").glob("*.py")
              if p.stem != "__init__"]
    loaded = modules_loaded_by(*engine)
    assert not {m for m in loaded if m.startswith(("folk.evals", "folk.commands"))}


def test_only_the_cli_imports_the_commands():
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "commands" or path == PACKAGE / "cli.py":
            continue
        commands = {m for m in imported_modules(path) if m.startswith("folk.commands")}
        assert not commands, f"{path.relative_to(REPO)} imports {sorted(commands)}"


def test_the_workflow_imports_no_folk_module_that_loads_torch():
    text = (REPO / "workflow" / "rules" / "common.smk").read_text()
    modules = sorted(set(re.findall(r"^\s*(?:from|import) (folk[\w.]*)", text, re.M)))
    assert "folk.config" in modules  # the pattern finds what the workflow imports
    assert "torch" not in modules_loaded_by(*modules)
