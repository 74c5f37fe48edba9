#!/usr/bin/env bash
# The main job: set up, then run the whole pipeline on real Fashion-MNIST on this machine's
# CPUs (data -> pre-training of each variant -> evaluations -> results/tables, results/figures).
# Extra arguments go to snakemake (e.g. -n for a dry run). Running it again does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
exec snakemake --cores "${CORES:-2}" --configfile params/demo.yaml "$@"
