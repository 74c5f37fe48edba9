"""One set of requirements: pyproject.toml states them, requirements.txt and environment.yml
repeat them line for line, and the environment the tests run in satisfies them."""

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


def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def declared() -> list[Requirement]:
    """pyproject's dependencies, then its `test` extra, in order."""
    project = pyproject()["project"]
    return [
        Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]
    ]


def requirements_txt() -> list[Requirement]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [Requirement(ln) for ln in (x.split("#")[0].strip() for x in lines) if ln]


def conda_env() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def conda_pip() -> list[Requirement]:
    deps = conda_env()["dependencies"]
    pip = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert len(pip) == 1, "environment.yml needs exactly one pip section"
    return [Requirement(r) for r in pip[0]]


def key(reqs: list[Requirement]) -> list[tuple[str, str, str]]:
    return [(canonicalize_name(r.name), str(r.specifier), str(r.marker or "")) for r in reqs]


def test_requirements_txt_is_pyproject():
    assert key(requirements_txt()) == key(declared())


def test_environment_yml_pip_section_is_requirements_txt():
    assert key(conda_pip()) == key(requirements_txt())


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
def test_this_environment_satisfies_the_pins(req):
    try:
        installed = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        pytest.fail(f"{req.name} is required ({req}) but not installed")
    # local version labels (+cu126) do not change what the pin means
    assert Version(installed.split("+")[0]) in req.specifier, f"{req.name} {installed} vs {req}"


def test_constraints_pin_every_requirement_within_its_range():
    """scripts/setup.sh installs requirements.txt under constraints.txt (exact versions):
    each requirement must be pinned there, to a version its specifier allows."""
    path = ROOT / "constraints.txt"
    if not path.is_file():
        pytest.skip("no constraints.txt")
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier  # one exact pin per line
            assert spec.operator == "==", line
            pins[canonicalize_name(req.name)] = Version(spec.version.split("+")[0])
    for req in requirements_txt():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in constraints.txt"
        assert pins[name] in req.specifier, f"constraints.txt {req.name}=={pins[name]} vs {req}"


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
