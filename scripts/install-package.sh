#!/usr/bin/env bash
# Install the folk package itself, editable, into the environment of the Python given
# (default .venv/bin/python): without its dependencies, which are there already, or with
# --with-deps also pyproject.toml's dependencies and its `test` extra (scripts/setup.sh),
# every package at the version constraints.txt pins.
# The build runs without isolation, in that environment, so it first gets the build
# backend pyproject.toml names, at the version constraints.txt pins: a bare venv has none
# (Python 3.12) or one too old for the SPDX licence field (3.10, 3.11).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
"$PY" -m pip install -q -c constraints.txt "setuptools>=77"
if [ "${2:-}" = --with-deps ]; then
  "$PY" -m pip install -q -c constraints.txt --no-build-isolation -e ".[test]"
else
  "$PY" -m pip install -q --no-deps --no-build-isolation -e .
fi
