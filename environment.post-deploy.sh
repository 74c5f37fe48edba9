#!/usr/bin/env bash
# Run by Snakemake (--software-deployment-method conda) after it creates the conda
# environment of environment.yml, in the workflow's directory: the folk package itself.
set -euo pipefail
python -m pip install --no-deps --editable .
