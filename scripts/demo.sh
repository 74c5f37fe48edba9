#!/usr/bin/env bash
# The main job: set up, then run the whole pipeline on real Fashion-MNIST on this machine's
# CPUs (data -> pre-training of each variant -> evaluations -> results/demo: tables, figures,
# metrics, curves, and the README's headline block), then Snakemake's HTML report
# (results/demo/report.html), then record the finished pipeline in dvc.lock so that
# `dvc repro` finds nothing to do. Extra arguments go to snakemake (e.g. -n for a dry run).
# Running it again does nothing but the report and the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
snakemake --cores "${CORES:-2}" --configfile params/demo.yaml "$@"
# with arguments (a dry run, a target, other options) the run is not the whole demo
[[ $# -eq 0 ]] || exit 0
snakemake --configfile params/demo.yaml --report results/demo/report.html
# DVC's own record of the stages Snakemake ran (hashes of code, params, data, outputs);
# the cache type is copy (.dvc/config), which keeps each output's mtime, so that Snakemake
# does not see the backbones as newer than the evaluations afterwards
dvc commit --force --quiet
