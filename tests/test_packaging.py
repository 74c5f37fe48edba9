"""One set of requirements: pyproject.toml states version ranges, constraints.txt (a full
freeze) is the only place of exact versions and pins each direct dependency within its range,
environment.yml's pip section repeats those pins, and the environment the tests run in
satisfies the ranges."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
EXACT = ("==", "===")


def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def declared() -> list[Requirement]:
    """pyproject's dependencies, then its `test` extra, in order."""
    project = pyproject()["project"]
    return [
        Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]
    ]


def constraints() -> list[Requirement]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return [Requirement(ln) for ln in (x.split("#")[0].strip() for x in lines) if ln]


def pinned_version(req: Requirement) -> str | None:
    """The version of an exact pin (``name==1.2``), else None."""
    specs = list(req.specifier)
    if len(specs) == 1 and specs[0].operator in EXACT:
        return specs[0].version
    return None


def conda_env() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def conda_pip() -> list[Requirement]:
    deps = conda_env()["dependencies"]
    pip = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert len(pip) == 1, "environment.yml needs exactly one pip section"
    return [Requirement(r) for r in pip[0]]


def test_pyproject_states_ranges_not_pins():
    for req in declared():
        exact = [str(s) for s in req.specifier if s.operator in EXACT]
        assert (
            not exact
        ), f"pyproject.toml pins {req.name} ({req}): exact versions belong in constraints.txt"


def test_constraints_txt_holds_exact_pins_only():
    names = [canonicalize_name(r.name) for r in constraints()]
    for req in constraints():
        assert pinned_version(req) is not None, f"constraints.txt: {req} is not an exact pin"
        assert (
            names.count(canonicalize_name(req.name)) == 1
        ), f"constraints.txt pins {req.name} twice"


@pytest.mark.parametrize("req", declared(), ids=lambda r: r.name)
def test_each_dependency_is_pinned_once_within_its_range(req):
    pins = [c for c in constraints() if canonicalize_name(c.name) == canonicalize_name(req.name)]
    assert len(pins) == 1, f"{req.name} has {len(pins)} pins in constraints.txt, needs one"
    version = pinned_version(pins[0])
    assert version is not None, f"constraints.txt: {pins[0]} is not an exact pin of {req.name}"
    # local version labels (+cu126) do not change what the pin means
    assert req.specifier.contains(
        Version(version.split("+")[0]), prereleases=True
    ), f"constraints.txt pins {req.name}=={version}, outside pyproject.toml's {req}"


def test_environment_yml_pip_section_is_the_pins_of_the_dependencies():
    pins = {canonicalize_name(c.name): pinned_version(c) for c in constraints()}
    want = {canonicalize_name(r.name): pins.get(canonicalize_name(r.name)) for r in declared()}
    have = {}
    for req in conda_pip():
        name = canonicalize_name(req.name)
        assert name not in have, f"environment.yml lists {req.name} twice"
        have[name] = pinned_version(req)
        assert have[name] is not None, f"environment.yml: {req} is not an exact pin"
    for name in want.keys() | have.keys():
        assert name in have, f"environment.yml lacks {name}=={want[name]} (constraints.txt)"
        assert name in want, f"environment.yml lists {name}, not a dependency in pyproject.toml"
        pinned = f"{name}=={want[name]}" if want[name] else "no version"
        assert (
            have[name] == want[name]
        ), f"environment.yml pins {name}=={have[name]}, constraints.txt {pinned}"


def test_environment_yml_python_meets_requires_python():
    deps = conda_env()["dependencies"]
    pythons = [d for d in deps if isinstance(d, str) and re.match(r"python\b", d)]
    assert len(pythons) == 1
    version = re.match(r"python\s*=+\s*([\d.]+)", pythons[0]).group(1)
    assert Version(version) in SpecifierSet(pyproject()["project"]["requires-python"])
    assert "pip" in deps  # the pip section needs conda's pip


def test_the_rules_conda_env_is_environment_yml():
    """Every rule runs in environment.yml's environment under
    --software-deployment-method conda; its post-deploy script installs folk there."""
    common = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    env = re.search(r'^FOLK_ENV = "([^"]+)"', common, re.M).group(1)
    assert (ROOT / "workflow" / "rules" / env).resolve() == ROOT / "environment.yml"
    rules = 0
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text()
        n_rules = len(re.findall(r"^rule \w+:", text, re.M))
        assert len(re.findall(r"^    conda:\n        FOLK_ENV$", text, re.M)) == n_rules, smk
        rules += n_rules
    assert rules >= 6
    deploy = (ROOT / "environment.post-deploy.sh").read_text()
    assert "pip install --no-deps --editable ." in deploy


@pytest.mark.parametrize("req", declared(), ids=lambda r: r.name)
def test_this_environment_satisfies_the_ranges(req):
    try:
        installed = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        pytest.fail(f"{req.name} is required ({req}) but not installed")
    # local version labels (+cu126) do not change what the range means
    assert Version(installed.split("+")[0]) in req.specifier, f"{req.name} {installed} vs {req}"


def test_the_package_installs_into_a_bare_venv(tmp_path):
    """What scripts/setup.sh runs for the package itself, in a venv as `python -m venv` makes
    it (Python 3.12 puts no setuptools there, 3.10 and 3.11 an old one, and no wheel)."""
    import subprocess
    import sys

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "install-package.sh"), str(python)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    meta = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m; d = m.metadata('folk-repro'); "
            "print(d['Version'], d['License-Expression'])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert meta == [pyproject()["project"]["version"], "MIT"]
